"""Never the last copy, more holes found by hostile testing after issue 10's gate went in.

Each test names the trick; each runs the real commands on real files with the PixelEmbedder seam.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import imagegen
import pytest
import support
from PIL import ImageDraw
from support import PixelEmbedder, Running, b, purge_process
from swapping import decode_swapped, rewrite
from test_companions import _copies_with
from test_never_last_copy import QUIET, config, copies, empty_trash, photo, purge, scan

from dedupd import commands
from dedupd.dedup.companions import XMP
from dedupd.errors import PurgeFailures
from dedupd.faults import acting_at
from dedupd.ingest.pipeline import CHANGED_WHILE_READ
from dedupd.model.loader import LazyEmbedder
from dedupd.purge.journal import journals, latest_states
from dedupd.store import OK, PENDING, UNREADABLE, FileRecord, Store, mark_own


def hand_report(path, groups, **extra):
    path.write_text(
        json.dumps({"groups": [{"keep": str(k), "duplicates": [str(d) for d in ds]} for k, ds in groups], **extra})
    )
    return path


def test_a_file_removed_earlier_in_the_run_is_not_trusted_as_a_keeper_later(tmp_path):
    """Y keeps Z, X keeps Y (Y goes), Y keeps X: Y's hash was remembered from the first group, so X went too."""
    root = tmp_path / "t"
    x = photo(root / "x.jpg", 31)
    y, z = root / "y.jpg", root / "z.jpg"
    shutil.copy2(x, y)
    shutil.copy2(x, z)
    picture = x.read_bytes()
    cfg = config(tmp_path)
    scan(cfg, root)
    report = hand_report(tmp_path / "chain.json", [(y, [z]), (x, [y]), (y, [x])])
    rc, lines = purge(cfg, report=report)
    assert picture in {p.read_bytes() for p in root.glob("*.jpg")}, lines


def test_a_keeper_reached_through_a_folder_swapped_for_a_symlink_is_not_the_victim(tmp_path):
    """After the scan, folder a/ (the keeper's) is replaced by a symlink to b/ (the victim's): the keeper's path now
    names the victim itself, whose bytes are of course the planned ones."""
    root = tmp_path / "t"
    keep, victim = copies(root, 32)
    picture = keep.read_bytes()
    cfg = config(tmp_path)
    old = tmp_path / "old.json"
    assert (str(keep), str(victim)) in support.pairs(scan(cfg, root, report=old))
    shutil.rmtree(root / "a")
    os.symlink("b", root / "a")
    rc, lines = purge(cfg, report=old)
    assert victim.exists() and victim.read_bytes() == picture, lines


def test_trash_expiry_does_not_trust_a_keeper_whose_folder_now_points_into_the_trash(tmp_path):
    root = tmp_path / "t"
    keep, victim = copies(root, 33)
    picture = keep.read_bytes()
    cfg = config(tmp_path)
    trash = tmp_path / "trash"
    scan(cfg, root)
    assert purge(cfg, trash=trash)[0] == 0
    assert (trash / "b" / "x.jpg").read_bytes() == picture
    shutil.rmtree(root / "a")
    os.symlink(trash / "b", root / "a")  # a/x.jpg now names the trashed file itself
    rc, lines = empty_trash(cfg)
    assert (trash / "b" / "x.jpg").exists(), lines


def test_a_report_cannot_lower_the_threshold_below_the_configured_one(tmp_path):
    """Pairs are stored down to dedup.pair_floor (0.90); the configured threshold (0.985) says a 0.96 pair is two
    pictures. A hand-written report saying "threshold": 0.9 must not turn it into one."""
    root = tmp_path / "t"
    original = photo(root / "a.jpg", 34)
    edited = imagegen.photo(34, (320, 240))
    ImageDraw.Draw(edited).rectangle([20, 20, 60, 60], fill=(0, 0, 0))  # cosine ~0.96 under the PixelEmbedder
    edited.save(root / "b.jpg", quality=92)
    cfg = config(tmp_path)
    report = scan(cfg, root)
    assert not report["groups"] or not support.pairs(report), "the two pictures are not duplicates at 0.985"
    hand = hand_report(
        tmp_path / "low.json", [(original, [root / "b.jpg"])], threshold=0.9, model=PixelEmbedder.model_id
    )
    rc, lines = purge(cfg, report=hand)
    assert rc == 1 and (root / "b.jpg").exists(), lines


def test_a_gallery_written_with_report_out_inside_a_root_is_never_indexed(tmp_path):
    """`report --format html --out t/a_review` (not report.html_dir): its thumbnails sort first under lexi."""
    root = tmp_path / "t"
    a = photo(root / "photos" / "a.jpg", 35)
    shutil.copy2(a, root / "photos" / "b.jpg")
    cfg = config(tmp_path)
    scan(cfg, root)
    gallery = root / "a_review"
    commands.report(cfg, str(gallery), echo=lambda s: None, model=PixelEmbedder.model_id, fmt="html")
    assert list(gallery.rglob("*.jpg"))
    scan(cfg, root)
    rc, lines = purge(cfg)
    assert a.exists() or (root / "photos" / "b.jpg").exists(), lines


def killed_aside(tmp_path, seed):
    """A photo (a/x.jpg) and its byte copy (b/x.jpg), scanned, and a purge of the copy killed (kill -9) between its
    rename aside and its unlink: (root, keep, victim, config, report)."""
    root = tmp_path / "t"
    keep, victim = copies(root, seed)
    cfg = config(tmp_path)
    report = tmp_path / "report.json"
    scan(cfg, root, report=report)
    killed = purge_process(cfg, report, fault="after-aside:1")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    return root, keep, victim, cfg, report


def test_recovery_does_not_finish_a_delete_whose_keeper_lost_the_picture_meanwhile(tmp_path):
    """kill -9 between the rename aside and the unlink; the user then deletes the keeper (the aside copy is still
    there); the next purge's recovery must not unlink the last copy."""
    root, keep, victim, cfg, old = killed_aside(tmp_path, 36)
    picture = keep.read_bytes()
    (aside,) = (p for p in (root / "b").iterdir() if p.name.startswith(".dedupd-purge-"))
    keep.unlink()  # not the last copy: the aside still holds the picture
    purge(cfg, report=old)
    left = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.read_bytes() == picture for p in left), [str(p) for p in left]


def test_trash_expiry_removes_only_what_it_trashed_not_what_a_symlinked_trash_folder_now_leads_to(tmp_path):
    """The trash subfolder b/ is replaced by a symlink to a photo folder holding a unique picture of the same name:
    `trash empty` followed it and deleted that picture."""
    root = tmp_path / "t"
    keep = photo(root / "a" / "x.jpg", 37)
    (root / "b").mkdir()
    shutil.copy2(keep, root / "b" / "x.jpg")
    unique = photo(tmp_path / "elsewhere" / "x.jpg", 38)
    picture = unique.read_bytes()
    cfg = config(tmp_path)
    trash = tmp_path / "trash"
    scan(cfg, root)
    assert purge(cfg, trash=trash)[0] == 0
    shutil.rmtree(trash / "b")
    os.symlink(unique.parent, trash / "b")
    rc, lines = empty_trash(cfg)
    assert unique.exists() and unique.read_bytes() == picture, lines


def test_a_trash_inside_a_root_is_not_indexed_by_a_new_store_either(tmp_path):
    """The store is lost or replaced (`--store` elsewhere, a wiped cache): a new store scans the root, the trash
    inside it sorts first under lexi ('T' < 'p'), and the original is purged: the picture then lives only in
    the trash."""
    root = tmp_path / "t"
    a = photo(root / "photos" / "a.jpg", 39)
    shutil.copy2(a, root / "photos" / "b.jpg")
    picture = a.read_bytes()
    trash = root / "Trash"
    first = config(tmp_path)
    scan(first, root)
    assert purge(first, trash=trash)[0] == 0
    second = config(tmp_path / "new")
    scan(second, root)
    purge(second)
    outside = [p for p in root.rglob("*.jpg") if trash not in p.parents]
    assert any(p.read_bytes() == picture for p in outside), [str(p) for p in root.rglob("*")]


def test_a_stores_thumbnail_cache_is_never_indexed_by_another_store(tmp_path):
    """Trashes and galleries carried a .dedupd-own-folder marker "whichever store", the store itself did not: its
    thumbs/ cache (written by `report --format html`) lies inside a root a second store scans (the default store
    ~/.local/share/dedupd under a scan of ~, or a store kept beside the photos), was indexed, and won lexi."""
    root = tmp_path / "home"
    a = photo(root / "photos" / "z.jpg", 6, (600, 400))
    shutil.copy2(a, root / "photos" / "zz.jpg")
    picture = a.read_bytes()
    first = config(tmp_path, store=str(root / ".local" / "dedupd"))
    scan(first, root / "photos")
    commands.report(first, str(tmp_path / "review"), echo=QUIET, model=PixelEmbedder.model_id, fmt="html")
    assert list((root / ".local" / "dedupd" / "thumbs").glob("*.jpg"))
    second = config(tmp_path / "second")  # another store, a scan of the whole home folder
    scan(second, root)
    rc, lines = purge(second)
    assert any(p.read_bytes() == picture for p in (root / "photos").iterdir()), lines


def test_a_scan_rehashes_a_file_rewritten_in_place_with_the_same_size_and_mtime(tmp_path):
    """The store must converge to what a fresh scan says: a rewrite in place keeps size, mtime and inode (the
    ctime moves). Before, the store kept the old content for good and reported a duplicate that is not one."""
    root = tmp_path / "t"
    keep = photo(root / "a.jpg", 40)
    shutil.copy2(keep, root / "b.jpg")
    cfg = config(tmp_path)
    scan(cfg, root)
    st = os.stat(keep)
    other = photo(tmp_path / "o.png", 41, (100, 80)).read_bytes()
    keep.write_bytes(other + b"\0" * (st.st_size - len(other)))
    os.utime(keep, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(keep).st_ino == st.st_ino
    assert support.pairs(scan(cfg, root)) == []
    from dedupd.ingest.hashing import content_hash
    from dedupd.store import Store

    assert Store.open(cfg.store_path()).files()[os.fsencode(keep)].content == content_hash(os.fsencode(keep))


def scan_swapping(cfg, root) -> dict:
    """A scan whose decoder rewrites files named swapped* (tests/swapping.py) after they were hashed."""
    report = root.parent / "swapped-report.json"
    embedder = LazyEmbedder(cfg, PixelEmbedder())
    rc = commands.scan(str(root), cfg, str(report), False, None, echo=QUIET, embedder=embedder, decode=decode_swapped)
    assert rc == 0
    return json.loads(report.read_bytes())


def grouped(report: dict) -> set[str]:
    return {p for g in report["groups"] for p in [g["keep"], *g["duplicates"]]}


def test_a_photo_saved_over_between_its_hash_and_its_decode_lends_its_picture_to_no_content(tmp_path):
    """Another picture is saved over x after the scan hashed x and before it decoded x. Its vector was stored under
    x's old content, so the store paired x's old picture (whose last copy is b/copy.jpg) with the new one, and a
    purge could remove that last copy as a duplicate of a picture it is not."""
    root = tmp_path / "t"
    swapped = photo(root / "a" / "swapped.jpg", 41)  # first by name: it carries the old picture's content
    last = photo(root / "b" / "copy.jpg", 41)  # the old picture's only other copy, byte for byte
    other = photo(root / "c" / "other.jpg", 42, size=(640, 480))  # the largest: the keeper
    (root / "a" / "swapped.jpg.next").write_bytes(other.read_bytes())
    picture = last.read_bytes()
    cfg = config(tmp_path, **{"dedup.keep_policy": "largest"})

    first = scan_swapping(cfg, root)

    assert str(last) not in grouped(first)  # no evidence ties the old picture to the new one
    files = Store.open(cfg.store_path()).files()
    assert (files[b(swapped)].status, files[b(swapped)].error) == (UNREADABLE, CHANGED_WHILE_READ)
    assert files[b(last)].status == PENDING  # its content is carried again next time, not settled by a stranger
    purge(cfg, tmp_path / "swapped-report.json")
    second = scan(cfg, root)
    assert [sorted([g["keep"], *g["duplicates"]]) for g in second["groups"]] == [[str(swapped), str(other)]]
    assert last.read_bytes() == picture
    assert Store.open(cfg.store_path()).files()[b(last)].status == OK


def test_a_photo_turned_to_garbage_between_its_hash_and_its_decode_does_not_condemn_its_copies(tmp_path):
    """The decoder's verdict ("not an image") was about other bytes, yet it was filed under the old content, so
    every byte copy of the old picture was recorded unreadable, and stayed so: unindexed, never grouped."""
    root = tmp_path / "t"
    swapped = photo(root / "a" / "swapped.jpg", 43)
    last = photo(root / "b" / "copy.jpg", 43)
    (root / "a" / "swapped.jpg.next").write_bytes(b"half-written, not a picture yet" * 100)
    cfg = config(tmp_path)

    scan_swapping(cfg, root)
    scan(cfg, root)

    files = Store.open(cfg.store_path()).files()
    assert files[b(last)].status == OK
    assert (files[b(swapped)].status, files[b(swapped)].error) == (UNREADABLE, "not an image")


def test_a_photo_grown_past_the_size_cap_between_its_hash_and_its_decode_does_not_condemn_its_copies(tmp_path):
    """The size refusal reads no bytes, so its verdict names none: filed under the old content, it would have
    recorded every byte copy of the old picture unreadable ("too large") for good."""
    root = tmp_path / "t"
    grown = photo(root / "a" / "grows.jpg", 44)
    last = photo(root / "b" / "copy.jpg", 44)
    size = grown.stat().st_size
    cfg = config(tmp_path)

    scan_swapping(cfg, root)
    files = Store.open(cfg.store_path()).files()
    assert (files[b(grown)].status, files[b(grown)].error) == (UNREADABLE, CHANGED_WHILE_READ)
    os.truncate(grown, size)  # the download that grew it is cancelled: the old picture again
    scan(cfg, root)

    files = Store.open(cfg.store_path()).files()
    assert files[b(last)].status == OK and files[b(grown)].status == OK


def test_a_photo_saved_over_with_bytes_that_kill_the_decoder_does_not_condemn_its_copies(tmp_path):
    """A decoder that died says nothing about which bytes it was reading: the file is hashed again, and a verdict
    about bytes it no longer holds is kept off the old content."""
    root = tmp_path / "t"
    swapped = photo(root / "a" / "swapped_dies.jpg", 45)
    last = photo(root / "b" / "copy.jpg", 45)
    imagegen.photo(46, (320, 240)).save(root / "a" / "swapped_dies.jpg.next", "JPEG", quality=92)
    cfg = config(tmp_path, **{"scan.decode_workers": 1})

    scan_swapping(cfg, root)
    files = Store.open(cfg.store_path()).files()
    assert (files[b(swapped)].status, files[b(swapped)].error) == (UNREADABLE, CHANGED_WHILE_READ)
    scan(cfg, root)

    files = Store.open(cfg.store_path()).files()
    assert files[b(last)].status == OK and files[b(swapped)].status == OK


# --- the act itself: another program moves in the gap between the purge's check and its act (faults.acting_at) ---


def scanned_copies(tmp_path, seed):
    """A photo (a/x.jpg, the keeper) and its byte copy (b/x.jpg) under tmp_path/t, scanned: (root, keep, victim,
    config)."""
    root = tmp_path / "t"
    keep, victim = copies(root, seed)
    cfg = config(tmp_path)
    scan(cfg, root)
    return root, keep, victim, cfg


def test_a_victim_saved_over_in_place_after_its_check_is_not_deleted(tmp_path):
    """An editor saves another picture into b/x.jpg (same inode, old mtime put back) after the purge hashed it and
    before it acted: the inode check passed and the edited picture, unique, was deleted."""
    root, keep, victim, cfg = scanned_copies(tmp_path, 51)
    edited = photo(tmp_path / "edited.jpg", 52)

    with acting_at("after-verify", lambda: rewrite(bytes(victim), bytes(edited))):
        rc, lines = purge(cfg)

    assert victim.read_bytes() == edited.read_bytes(), lines
    assert any("the file was rewritten between the check and the act; put back" in line for line in lines), lines
    assert not list((root / "b").glob(".dedupd-purge-*"))


def test_a_keeper_saved_over_after_its_check_keeps_its_victim(tmp_path):
    """The keeper is proven once a run; an editor then saves another picture over it: the victim was the picture's
    last copy, and went."""
    root, keep, victim, cfg = scanned_copies(tmp_path, 53)
    picture = victim.read_bytes()
    edited = photo(tmp_path / "edited.jpg", 54)

    with acting_at("after-verify", lambda: rewrite(bytes(keep), bytes(edited))):
        rc, lines = purge(cfg, trash=tmp_path / "trash")

    assert victim.read_bytes() == picture, lines
    assert any("the keeper's content changed since the plan was made" in line for line in lines), lines
    assert not [p for p in (tmp_path / "trash").rglob("*") if p.is_file()]


def test_a_picture_saved_at_the_victims_name_during_a_copy_to_another_filesystem_is_not_deleted(tmp_path):
    """A trash on another filesystem means copy, verify, delete. A program saves a new picture at the victim's name
    (written beside it, renamed over) while the copy is verified: the delete by name removed that new picture."""
    trash = Path("/dev/shm") / f"dedupd-test-{os.getpid()}-saved-over"
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem here")
    root, keep, victim, cfg = scanned_copies(tmp_path, 55)
    new = photo(tmp_path / "new.jpg", 56)

    def save_over() -> None:
        shutil.copy2(new, root / "b" / "x.jpg.part")
        os.replace(root / "b" / "x.jpg.part", victim)

    try:
        with acting_at("after-copy", save_over):
            rc, lines = purge(cfg, trash=trash)
        assert victim.read_bytes() == new.read_bytes(), lines
        assert any("the file was swapped between the check and the act" in line for line in lines), lines
        assert not [p for p in trash.rglob("*") if p.is_file()]  # its copy of the old picture went, not the new one
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def holders(folder, picture: bytes) -> list[str]:
    """Every file under folder, hidden names too, that holds these bytes."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and p.read_bytes() == picture]


def test_a_file_that_cannot_be_put_back_is_named_and_settled_by_the_next_purge(tmp_path):
    """The disk fails (read-only, a share gone) after the victim was renamed aside, and it cannot go back (here: its
    name and every name beside it are taken meanwhile): the purge said only "Read-only file system" and closed its
    journal entry, so the picture stayed under a hidden name that no scan indexes and no recovery looked at again."""
    root, keep, victim, cfg = scanned_copies(tmp_path, 61)
    picture = victim.read_bytes()

    def disk_fails() -> None:
        photo(victim, 62)  # another program saves at the victim's (now free) name
        for n in range(1, 1000):
            (root / "b" / f"x (dedupd {n}).jpg").touch()
        raise OSError(30, "Read-only file system")

    with acting_at("after-aside", disk_fails):
        rc, lines = purge(cfg)
    (aside,) = (root / "b").glob(".dedupd-purge-*")
    assert any(f"waits at {aside}" in line for line in lines), lines
    purge(cfg)  # its recovery: the keeper still holds the picture, so the interrupted delete is finished

    assert not list((root / "b").glob(".dedupd-purge-*"))
    assert holders(tmp_path / "t", picture) == [str(keep)]


def keeper_edited_and_name_taken(tmp_path, keep, victim, seed):
    """While the victim sits aside: an editor saves over its keeper, and another program saves a new picture at the
    victim's name. The victim is then its picture's last copy, and its name is taken."""

    def other_programs() -> None:
        rewrite(bytes(keep), bytes(photo(tmp_path / "edit.jpg", seed)))
        photo(victim, seed + 1)

    return other_programs


def test_a_file_left_aside_is_never_replaced_by_a_later_act_of_the_same_process(tmp_path):
    """The victim could not go back to its taken name and stayed at its aside name. The new picture then got a copy
    and the same process (the daemon) purged it: the aside name, derived from the process id and the file name, was
    the same, and rename replaced the old picture. (It now goes back beside its name; the aside names stay unique.)"""
    root, keep, victim, cfg = scanned_copies(tmp_path, 63)
    picture = victim.read_bytes()

    with acting_at("after-aside", keeper_edited_and_name_taken(tmp_path, keep, victim, 64)):
        purge(cfg)
    shutil.copy2(victim, root / "a" / "y.jpg")
    scan(cfg, root)
    purge(cfg)

    assert holders(root, picture), "the old picture is gone"


def test_recovery_never_takes_an_earlier_purges_trashed_file_for_its_own_copy(tmp_path):
    """b/x.jpg was trashed; its keeper was then edited, so the trash holds the picture's last copy. A new b/x.jpg
    with a copy elsewhere is purged into the same trash and killed after its intent named trash/b/x.jpg: recovery
    took the file there for a partial copy of its own and deleted it."""
    trash = tmp_path / "trash"
    root, keep, victim, cfg = scanned_copies(tmp_path, 66)
    picture = victim.read_bytes()
    assert purge(cfg, trash=trash)[0] == 0
    rewrite(bytes(keep), bytes(photo(tmp_path / "edit.jpg", 67)))
    photo(victim, 68)
    shutil.copy2(victim, root / "a" / "y.jpg")
    report = tmp_path / "second.json"
    scan(cfg, root, report=report)

    purge_process(cfg, report, "--trash", str(trash), fault="after-intent:1")
    purge(cfg, report=report, trash=trash)

    assert holders(trash, picture), "the trashed picture, its last copy, is gone"


def killed_before_companion(tmp_path, name, seed, *extra):
    """a/NAME and b/NAME, byte copies, each with the same XMP sidecar, scanned; a purge (with `extra` options) killed
    after b/NAME went and before its sidecar followed: (config, report, the sidecar left without its photo)."""
    root = tmp_path / "t"
    for folder in "ab":
        photo(root / folder / name, seed)
        (root / folder / f"{name}.xmp").write_text("<x:xmpmeta/>")
    cfg = config(tmp_path)
    report = tmp_path / "report.json"
    scan(cfg, root, report=report)
    killed = purge_process(cfg, report, *extra, fault="before-companion:1")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    (sidecar,) = (p for p in root.rglob(f"{name}.xmp") if not (p.parent / name).exists())
    return cfg, report, sidecar


def test_recovery_keeps_a_sidecar_edited_after_the_kill(tmp_path):
    """kill -9 after the photo went and before its XMP followed; the user then saves new edits into the XMP (same
    inode). Recovery moved it on the inode alone, and the edits went with a photo that no longer exists."""
    cfg, report, sidecar = killed_before_companion(tmp_path, "IMG_4.JPG", 69)
    with open(sidecar, "r+") as f:  # an editor saving in place
        f.write("<x:xmpmeta>crop, exposure +0.7</x:xmpmeta>")

    purge(cfg, report=report)

    assert sidecar.read_text() == "<x:xmpmeta>crop, exposure +0.7</x:xmpmeta>"


def test_a_file_whose_name_was_taken_while_it_sat_aside_goes_back_in_plain_sight(tmp_path):
    """The keeper is saved over and a new picture saved at the victim's name while the victim sits aside: the victim
    is then the old picture's last copy. It stayed under a hidden `.dedupd-purge-*` name that no scan indexes and no
    file manager shows; it now goes back beside its name, and the next scan indexes it there."""
    root, keep, victim, cfg = scanned_copies(tmp_path, 71)
    picture = victim.read_bytes()

    with acting_at("after-aside", keeper_edited_and_name_taken(tmp_path, keep, victim, 72)):
        rc, lines = purge(cfg)
    beside = root / "b" / "x (dedupd 1).jpg"
    assert rc == 1 and any(f"put back as {beside}" in line for line in lines), lines
    assert beside.read_bytes() == picture and not list((root / "b").glob(".dedupd-purge-*"))
    scan(cfg, root)
    assert Store.open(cfg.store_path()).files()[b(beside)].status == OK


def test_recovery_puts_a_file_whose_name_was_taken_after_the_kill_beside_it(tmp_path):
    """kill -9 with the victim aside; the user then edits the keeper and saves a new picture at the victim's name.
    Recovery may not finish the delete (the keeper lost the picture) nor rename over the new file: the old picture
    goes back beside its name, visible."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 74)
    picture = keep.read_bytes()
    rewrite(bytes(keep), bytes(photo(tmp_path / "edit.jpg", 75)))
    new = photo(victim, 76).read_bytes()

    rc, lines = purge(cfg, report=report)

    beside = root / "b" / "x (dedupd 1).jpg"
    assert beside.read_bytes() == picture, lines
    assert victim.read_bytes() == new and not list((root / "b").glob(".dedupd-purge-*"))
    assert any(f"put back as {beside}" in line for line in lines), lines


def test_a_keeper_named_through_a_folder_now_a_symlink_is_refused_like_a_victim(tmp_path):
    """The victim's path must have no symlinked parent; the keeper's was never checked. One file then answers to
    two names, and the run's by-path guards (a keeper of an earlier removal is never removed later) miss it."""
    root, keep, victim, cfg = scanned_copies(tmp_path, 77)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy2(keep, tmp_path / "elsewhere" / "x.jpg")
    shutil.rmtree(root / "a")
    os.symlink(tmp_path / "elsewhere", root / "a")
    rc, lines = purge(cfg)
    assert rc == 1 and victim.exists(), lines
    assert any("a parent directory is a symlink" in line for line in lines), lines


# --- recovery and undo act the way the purge acts: proven at the moment of acting, never over another file ----------


def trashed_copy(tmp_path, seed, trash):
    """scanned_copies() with b/x.jpg purged into trash: (root, keep, victim, config, the purge's journal)."""
    root, keep, victim, cfg = scanned_copies(tmp_path, seed)
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not victim.exists(), lines
    (journal,) = journals(cfg.store_path() / "journal")
    return root, keep, victim, cfg, journal


def undo(cfg, journal) -> list[str]:
    lines: list[str] = []
    try:
        commands.undo_purge(cfg, str(journal), echo=lines.append)
    except PurgeFailures as exc:
        lines.append(str(exc))
    return lines


def other_fs_trash(tmp_path, name):
    trash = Path("/dev/shm") / f"dedupd-test-{os.getpid()}-{name}"
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem here")
    return trash


def sync_app_saves(victim, new_picture, saved):
    """Another program (a phone sync, an editor's export) saves a new picture at the victim's free name."""

    def save() -> None:
        if not victim.exists():
            victim.write_bytes(new_picture)
            saved.append(True)

    return save


@pytest.mark.parametrize("where", ["same-fs", "other-fs"])
def test_undo_never_moves_a_trashed_file_over_one_saved_at_its_name_meanwhile(tmp_path, where):
    """`purge --undo` checks the victim's name is free, then os.rename()s the trashed file there: a picture another
    program (a phone sync, an editor's export) saves at that name in between is replaced, and it was the only copy.
    Across filesystems the fallback (shutil.copy2, then unlink) had the same gap, and never verified its copy. Undo
    now puts the trashed file beside the new picture."""
    trash = other_fs_trash(tmp_path, "undo-over") if where == "other-fs" else tmp_path / "trash"
    try:
        root, keep, victim, cfg, journal = trashed_copy(tmp_path, 81, trash)
        new_picture = photo(tmp_path / "new.jpg", 82).read_bytes()
        saved: list[bool] = []
        with acting_at("before-restore", sync_app_saves(victim, new_picture, saved)):
            lines = undo(cfg, journal)

        assert saved, lines
        assert victim.read_bytes() == new_picture, f"undo replaced the picture saved at the victim's name: {lines}"
        beside = victim.with_name("x (dedupd 1).jpg")
        assert beside.read_bytes() == keep.read_bytes(), lines
        assert not holders(trash, keep.read_bytes()), lines
        assert any(f"restored {victim} as {beside}: another file is at its name" in line for line in lines), lines
        assert not list((root / "b").glob("*.dedupd-partial"))
    finally:
        shutil.rmtree(trash, ignore_errors=True)


@pytest.mark.parametrize("where", ["same-fs", "other-fs"])
def test_undo_restores_only_the_file_the_purge_trashed(tmp_path, where):
    """The trashed file's bytes changed since the purge (an editor opened it from the trash and saved): undo put
    back whatever was at the trash path under the victim's name, as if it were the purged file."""
    trash = other_fs_trash(tmp_path, "undo-changed") if where == "other-fs" else tmp_path / "trash"
    try:
        root, keep, victim, cfg, journal = trashed_copy(tmp_path, 83, trash)
        in_trash = trash / "b" / "x.jpg"
        rewrite(bytes(in_trash), bytes(photo(tmp_path / "edit.jpg", 84)))
        edited = in_trash.read_bytes()

        lines = undo(cfg, journal)

        assert not victim.exists() and in_trash.read_bytes() == edited, lines
        assert any(f"not restored {victim}: " in line and "bytes" in line for line in lines), lines
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def test_undo_across_filesystems_puts_back_a_verified_copy(tmp_path):
    """Undo from a trash on another filesystem: the file comes back whole, with its times and mode, and leaves the
    trash only once its copy verified at the victim's name."""
    trash = other_fs_trash(tmp_path, "undo-copy")
    try:
        root, keep, victim, cfg, journal = trashed_copy(tmp_path, 85, trash)
        in_trash = trash / "b" / "x.jpg"
        mtime = in_trash.stat().st_mtime_ns

        lines = undo(cfg, journal)

        assert victim.read_bytes() == keep.read_bytes() and victim.stat().st_mtime_ns == mtime, lines
        assert not in_trash.exists() and not list((root / "b").glob("*.dedupd-partial"))
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def editor_saves(path, new_bytes, saved):
    """An editor saves `path` the usual way (a temp file renamed over it), once."""

    def save() -> None:
        if not saved:
            temp = path.with_name(f".{path.name}.tmp")
            temp.write_bytes(new_bytes)
            os.replace(temp, path)
            saved.append(True)

    return save


@pytest.mark.parametrize("trash", [False, True])
def test_recovery_never_deletes_a_sidecar_an_editor_saved_after_its_check(tmp_path, trash):
    """kill -9 after a delete's photo went and before its XMP did; the next purge's recovery finishes the companion
    with a bare os.unlink(path) (recovery._complete) right after hashing it by path (_rewritten): an editor that
    saves the sidecar (write a temp file, rename over) in that gap loses the save, the only copy of the new edits.
    The purge itself takes a file aside and proves it there first; recovery did not (nor did its shutil.move into
    the trash)."""
    extra = ["--trash", str(tmp_path / "trash")] if trash else []
    cfg, report, sidecar = killed_before_companion(tmp_path, "IMG_1.JPG", 86, *extra)
    new_edits = b"<x:xmpmeta>edits saved just now</x:xmpmeta>"
    saved: list[bool] = []

    with acting_at("recovery-act", editor_saves(sidecar, new_edits, saved)):
        rc, lines = purge(cfg, report=report, trash=tmp_path / "trash" if trash else None)

    assert saved, lines
    assert sidecar.read_bytes() == new_edits, f"recovery removed the sidecar an editor had just saved: {lines}"


def test_recovery_never_moves_a_companion_over_a_file_at_its_trash_place(tmp_path):
    """kill -9 after a trash purge's photo went and before its XMP followed; meanwhile another purge (another store,
    another root with the same relative path) trashed its own b/IMG_2.JPG.xmp there, perhaps the last copy of its
    edits. Recovery's shutil.move renamed the companion over it."""
    trash = tmp_path / "trash"
    cfg, report, sidecar = killed_before_companion(tmp_path, "IMG_2.JPG", 87, "--trash", str(trash))
    theirs = trash / sidecar.relative_to(tmp_path / "t")
    theirs.write_text("<x:xmpmeta>another purge's only copy</x:xmpmeta>")

    rc, lines = purge(cfg, report=report, trash=trash)

    assert theirs.read_text() == "<x:xmpmeta>another purge's only copy</x:xmpmeta>", lines
    assert sidecar.read_text() == "<x:xmpmeta/>", lines


def test_recovery_never_deletes_an_original_saved_over_after_its_check(tmp_path):
    """A move to a trash on another filesystem killed after its copy verified and before the original went: recovery
    hashed the original by path and then os.unlink()ed that path; a picture an editor saved there in between went."""
    trash = other_fs_trash(tmp_path, "finish-move")
    try:
        root, keep, victim, cfg = scanned_copies(tmp_path, 88)
        report = tmp_path / "report.json"
        scan(cfg, root, report=report)
        killed = purge_process(cfg, report, "--trash", str(trash), fault="after-copy:1")
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        assert victim.exists() and (trash / "b" / "x.jpg").exists()
        new_picture = photo(tmp_path / "new.jpg", 89).read_bytes()
        saved: list[bool] = []

        with acting_at("recovery-act", editor_saves(victim, new_picture, saved)):
            rc, lines = purge(cfg, report=report, trash=trash)

        assert saved, lines
        assert victim.read_bytes() == new_picture, f"recovery deleted the picture saved at the victim's name: {lines}"
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def test_recovery_finishing_a_companion_delete_proves_its_twin(tmp_path):
    """kill -9 after the photo went and before its XMP followed (a delete); the user then saves other edits into the
    keeper's XMP, its twin. A purge that was not interrupted keeps the victim's XMP (the last copy of the edits both
    had); recovery finished the act without proving the twin and deleted it."""
    cfg, report, sidecar = killed_before_companion(tmp_path, "IMG_7.JPG", 201)
    edits = sidecar.read_bytes()
    (tmp_path / "t" / "a" / "IMG_7.JPG.xmp").write_text("<x:xmpmeta>reset all</x:xmpmeta>")

    rc, lines = purge(cfg, report=report)

    assert sidecar.read_bytes() == edits, lines


def test_trash_empty_proves_a_companion_trashed_before_twins_against_its_own_bytes(tmp_path):
    """A purge before twins compared companion kinds only and journaled a companion with its photo's keeper: a
    trashed b/IMG_2.JPG.xmp may hold other edits than a/IMG_2.JPG.xmp. `trash empty` proved the keeper photo, which
    still holds its picture, and removed the only copy of those edits. (The journal is written by today's purge,
    its companion line then put in the old shape.)"""
    root = tmp_path / "t"
    for folder in "ab":
        photo(root / folder / "IMG_2.JPG", 202)
        (root / folder / "IMG_2.JPG.xmp").write_text("<x:xmpmeta>crop 3:2</x:xmpmeta>")
    cfg = config(tmp_path)
    scan(cfg, root)
    trash = tmp_path / "trash"
    assert purge(cfg, trash=trash)[0] == 0
    (journal,) = journals(cfg.store_path() / "journal")
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    photo_intent = next(r for r in records if r["state"] == "intent" and not r["of"])
    for r in records:
        if r["of"]:
            r["keeper"], r["keeper_content"] = photo_intent["keeper"], photo_intent["keeper_content"]
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "a" / "IMG_2.JPG.xmp").write_text("<x:xmpmeta>b/w, other tags</x:xmpmeta>")  # what the old gate allowed

    rc, lines = empty_trash(cfg)

    assert (trash / "b" / "IMG_2.JPG.xmp").read_text() == "<x:xmpmeta>crop 3:2</x:xmpmeta>", lines
    assert (trash / "b" / "IMG_2.JPG").exists(), lines  # its keeper holds it, yet it stays with its sidecar


def sniffed_keeper(tmp_path, seed):
    """scan.sniff on: a/IMG_1 (no extension, a JPEG known by its bytes) and a/IMG_1.JPG, byte copies, and one sidecar
    a/IMG_1.xmp both claim. A hand-written report keeps the sniffed one."""
    root = tmp_path / "t"
    jpg = photo(root / "a" / "IMG_1.JPG", seed)
    sniffed = root / "a" / "IMG_1"
    shutil.copy2(jpg, sniffed)
    sidecar = root / "a" / "IMG_1.xmp"
    sidecar.write_text("<x:xmpmeta>the only copy of these edits</x:xmpmeta>")
    cfg = config(tmp_path, **{"scan.sniff": True})
    scan(cfg, root)
    report = hand_report(tmp_path / "hand.json", [(sniffed, [jpg])])
    return jpg, sniffed, sidecar, cfg, report


def test_a_sidecar_the_keeper_claims_stays_with_it_and_is_never_its_own_twin(tmp_path):
    """The keeper found by sniffing claims the victim's sidecar too, which other_claimants() (image names only)
    missed: the gate took the keeper's own sidecar for the victim's companion and for its twin at once. Live, the
    act's twin proof caught it (with a false "left in place"); after a kill, recovery deleted the keeper's only
    sidecar."""
    jpg, sniffed, sidecar, cfg, report = sniffed_keeper(tmp_path, 203)
    edits = sidecar.read_bytes()
    rc, lines = purge(cfg, report=report)
    assert rc == 0 and not jpg.exists() and sidecar.read_bytes() == edits, lines
    assert not any("left in place" in line or "could not follow" in line for line in lines), lines

    jpg, sniffed, sidecar, cfg, report = sniffed_keeper(tmp_path / "killed", 204)
    killed = purge_process(cfg, report, fault="before-done:1")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    purge(cfg, report=report)
    assert sidecar.read_bytes() == b"<x:xmpmeta>the only copy of these edits</x:xmpmeta>"


def test_a_victim_with_a_long_name_whose_name_was_taken_goes_back_in_plain_sight(tmp_path):
    """A 250-byte name (NAME_MAX is 255): `NAME (dedupd 1).jpg` was too long, the error was taken for a filesystem
    without hard links, and the picture's last copy stayed under its hidden aside name; the next purge's recovery
    hit the same error, uncaught, and every later purge died on it."""
    root = tmp_path / "t"
    name = "x" * 246 + ".jpg"
    keep, victim = copies(root, 205, keep=f"a/{name}", dup=f"b/{name}")
    picture = victim.read_bytes()
    cfg = config(tmp_path)
    scan(cfg, root)

    with acting_at("after-aside", keeper_edited_and_name_taken(tmp_path, keep, victim, 206)):
        rc, lines = purge(cfg)

    visible = [p for p in (root / "b").iterdir() if not p.name.startswith(".") and p.read_bytes() == picture]
    assert [len(p.name.encode()) for p in visible] == [255], lines
    assert purge(cfg)[0] in (0, 1)  # the next purge runs


def test_a_victim_whose_name_has_an_early_dot_goes_back_in_plain_sight(tmp_path):
    """scan.sniff on: `Dr. xxx...` (250 bytes, no image extension) is a JPEG known by its bytes. splitext() took
    `. xxx...` for the extension and only the stem was cut, so the name beside stayed over NAME_MAX: the picture,
    its last copy, stayed under its hidden aside name, and every later recovery failed without saying where."""
    root = tmp_path / "t"
    name = "Dr. " + "x" * 246
    keep, victim = root / "a" / name, root / "b" / name
    for path in (keep, victim):
        path.parent.mkdir(parents=True)
        shutil.copy2(photo(tmp_path / "source.jpg", 301), path)
    picture = victim.read_bytes()
    cfg = config(tmp_path, **{"scan.sniff": True})
    scan(cfg, root)

    def other_programs() -> None:
        rewrite(bytes(keep), bytes(photo(tmp_path / "edit.jpg", 302)))
        shutil.copy2(photo(tmp_path / "new.jpg", 303), victim)

    with acting_at("after-aside", other_programs):
        rc, lines = purge(cfg, report=hand_report(tmp_path / "hand.json", [(keep, [victim])]))

    visible = [p for p in (root / "b").iterdir() if not p.name.startswith(".") and p.read_bytes() == picture]
    assert [p.name for p in visible] == ["Dr. " + "x" * 240 + " (dedupd 1)"], lines


def test_a_keeper_that_fails_to_read_skips_its_item_and_the_run_goes_on(tmp_path):
    """A keeper whose read fails with EIO (a bad sector, a cloud placeholder, a soft NFS mount timing out): the
    OSError left the gate as no Refused, and the whole purge died at that item, every time. /proc/PID/mem stands in
    for the bad sector: a regular file whose read at offset 0 fails with EIO (its store row written by hand)."""
    root = tmp_path / "t"
    keep, victim = copies(root, 321)
    other_keep, other_victim = copies(root, 322, keep="c/y.jpg", dup="d/y.jpg")
    cfg = config(tmp_path)
    scan(cfg, root)
    store = Store.open(cfg.store_path())
    bad = f"/proc/{os.getpid()}/mem".encode()
    content = store.files()[b(keep)].content
    store.upsert_files([FileRecord.of(bad, b"/proc", os.stat(bad), content=content, status=OK)])
    report = hand_report(tmp_path / "hand.json", [(os.fsdecode(bad), [victim]), (other_keep, [other_victim])])

    rc, lines = purge(cfg, report=report)

    assert rc == 1 and victim.exists() and not other_victim.exists(), lines
    assert any("cannot read" in line and "Input/output error" in line for line in lines), lines


def journal_states(cfg) -> dict[bytes, str]:
    out = {}
    for path in journals(cfg.store_path() / "journal"):
        for intent, last in latest_states(path).values():
            out[intent.victim_path] = last.state
    return out


def test_a_keeper_read_failing_after_the_rename_into_the_trash_is_not_journaled_as_skipped(tmp_path):
    """purge --trash on one filesystem: os.rename(victim, dest), then _hold re-reads the keeper. That read fails with
    EIO (a cloud placeholder, a NAS share timing out: readable at the gate, not at the act). trash() has no
    `except OSError` around _hold (delete() has), so the OSError reaches _act, which journals the entry "skipped"
    ("its photo stayed") while the victim sits in the trash: the purge says it was skipped, undo ignores it, and
    recovery never looks at it again. /proc/PID/mem stands in for the bad read (its folder swapped in at the act)."""
    root = tmp_path / "t"
    keep, victim = copies(root, 401)
    picture = victim.read_bytes()
    cfg = config(tmp_path)
    scan(cfg, root)
    keeper = root / "k" / "mem"  # the keeper, read fine at the gate
    keeper.parent.mkdir()
    shutil.copy2(keep, keeper)
    store = Store.open(cfg.store_path())
    content = store.files()[b(victim)].content
    store.upsert_files([FileRecord.of(b(keeper), b(root), os.stat(keeper), content=content, status=OK)])
    trash = tmp_path / "trash"

    def share_fails() -> None:  # from here on, reading the keeper gives EIO
        (root / "k").rename(root / "k-away")
        os.symlink(f"/proc/{os.getpid()}", root / "k")

    with acting_at("after-intent", share_fails):
        rc, lines = purge(cfg, report=hand_report(tmp_path / "hand.json", [(keeper, [victim])]), trash=trash)

    in_trash = [p for p in trash.rglob("*") if p.is_file() and p.read_bytes() == picture]
    state = journal_states(cfg).get(b(victim))
    # Either it went back (the act failed) or its journal says where it is (done, or open for recovery).
    assert victim.exists() and state == "skipped" and not in_trash, (lines, in_trash, state)


# --- folders another store marked as its own (.dedupd-own-folder): this store never heard of them ---------------


def inside_any_of(paths, folders) -> list[bytes]:
    return sorted(p for p in paths if any(p.startswith(b(f) + b"/") for f in folders))


def indexed_after_a_later_photo(daemon, folder, seed) -> set[bytes]:
    """The daemon's index once a photo written now is in it: the events before it have been handled by then."""
    later = photo(folder / "later.jpg", seed)
    support.wait_for(lambda: b(later) in daemon.paths(), what="a later photo to be indexed")
    return daemon.paths()


def test_the_daemon_never_indexes_another_stores_thumbnail_cache_it_writes_while_watching(tmp_path):
    """The daemon (its store elsewhere, purge.auto) watches ~; the user's own store is ~/.local/share/dedupd, marked.
    Its gallery's thumbnails land there while the daemon runs: the walk skipped the marked folder, but the events
    went to the indexer, which knew only the daemon's own folders. The thumbnail, a near-duplicate of the original
    that sorts first under lexi, became its keeper and the original was purged."""
    home = tmp_path / "home"
    pics = home / "Pictures"
    original = photo(pics / "a" / "img.jpg", 7)
    (pics / "b").mkdir()
    shutil.copy2(original, pics / "b" / "img.jpg")
    user_store = home / ".local" / "share" / "dedupd"
    user = config(tmp_path, store=str(user_store))
    scan(user, pics)
    with Running(tmp_path, [home], **{"purge.auto": True}) as daemon:
        support.wait_for(lambda: not (pics / "b" / "img.jpg").exists(), what="purge.auto to remove the byte copy")
        commands.report(user, str(home / "review"), echo=QUIET, model=PixelEmbedder.model_id, fmt="html")
        assert list((user_store / "thumbs").glob("*.jpg"))
        indexed = inside_any_of(indexed_after_a_later_photo(daemon, pics, 8), (user_store, home / "review"))
    assert original.exists() and not indexed, indexed


def test_a_trash_another_store_fills_while_the_daemon_watches_is_never_indexed_nor_a_keeper(tmp_path):
    """The daemon watches ~/Pictures and only reports; the user's command-line store purges into
    ~/Pictures/.trash (marked, remembered by that store only). The rename into it was indexed from its event, the
    daemon's report kept the trashed copy (lexi: '.trash' < 'a') and a purge from the daemon's store removed the
    original against it."""
    pics = tmp_path / "Pictures"
    original = photo(pics / "a" / "x.jpg", 31)
    (pics / "b").mkdir()
    shutil.copy2(original, pics / "b" / "x.jpg")
    user = config(tmp_path / "user")
    with Running(tmp_path, [pics]) as daemon:
        support.wait_for(lambda: len(daemon.paths()) == 2, what="the daemon to index both copies")
        scan(user, pics, report=tmp_path / "user-report.json", inplace=True, trash=pics / ".trash")
        assert (pics / ".trash" / "b" / "x.jpg").exists()
        indexed = inside_any_of(indexed_after_a_later_photo(daemon, pics, 32), (pics / ".trash",))
    support.purge_lines(daemon.config)
    assert original.exists() and not indexed, indexed


def test_a_keeper_in_a_folder_another_store_marked_since_the_report_proves_nothing(tmp_path):
    """The keeper's folder became another store's trash or gallery after the report (`--trash` or `--out` an
    existing folder): what lies there is that store's to prune, so it is no proof the picture survives."""
    root = tmp_path / "t"
    keep, victim = copies(root, 35)
    cfg = config(tmp_path)
    scan(cfg, root)
    mark_own(root / "a")
    rc, lines = purge(cfg)
    assert rc == 1 and victim.exists() and keep.exists(), lines
    assert any("dedupd writes itself" in line for line in lines), lines


def test_trash_expiry_keeps_a_file_whose_keeper_now_lies_in_a_folder_another_store_marked(tmp_path):
    root = tmp_path / "t"
    keep, victim = copies(root, 36)
    cfg = config(tmp_path)
    trash = tmp_path / "trash"
    scan(cfg, root)
    assert purge(cfg, trash=trash)[0] == 0
    mark_own(root / "a")
    rc, lines = empty_trash(cfg)
    assert rc == 1 and (trash / "b" / "x.jpg").exists(), lines


@pytest.mark.parametrize("trash", [".local/share/Trash", ".Trash"])
def test_the_daemon_never_keeps_a_copy_in_the_desktop_trash_and_deletes_the_photo(tmp_path, trash):
    """The daemon watches ~ with purge.auto; a second copy of a photo is thrown into the desktop trash (what a file
    manager's Delete does; ~/.Trash on a Mac). Indexed from its event, it won lexi ('.' < 'P') and the photo was
    purged against it: the picture then lived only in the trash the user empties."""
    home = tmp_path / "home"
    kept = photo(home / "Pictures" / "x.jpg", 41)
    with Running(tmp_path, [home], **{"purge.auto": True}) as daemon:
        support.wait_for(lambda: b(kept) in daemon.paths(), what="the photo to be indexed")
        (home / trash / "info").mkdir(parents=True)
        (home / trash / "files").mkdir()
        shutil.copy2(kept, home / trash / "files" / "x.jpg")
        (home / trash / "info" / "x.jpg.trashinfo").write_text("[Trash Info]\nPath=/home/u/Downloads/x.jpg\n")
        indexed = inside_any_of(indexed_after_a_later_photo(daemon, home / "Pictures", 42), (home / trash,))
    assert kept.exists() and not indexed, indexed


def test_undo_brings_back_a_file_an_interrupted_purge_left_in_the_trash(tmp_path):
    """A purge with --trash is killed after moving b/x.jpg into the trash, before its done line. Undo read only done
    acts: it restored nothing, said nothing and exited 0, while the photo waited in the trash."""
    root = tmp_path / "t"
    keep, victim = copies(root, 41)
    cfg = config(tmp_path)
    report = tmp_path / "report.json"
    scan(cfg, root, report=report)
    killed = purge_process(cfg, report, "--trash", str(tmp_path / "trash"), fault="before-done:1")
    assert killed.returncode == -signal.SIGKILL and (tmp_path / "trash" / "b" / "x.jpg").exists(), killed.stderr
    (journal,) = (cfg.store_path() / "journal").glob("purge-*.jsonl")

    assert commands.undo_purge(cfg, str(journal), echo=lambda s: None) == 0

    assert victim.exists() and not (tmp_path / "trash" / "b" / "x.jpg").exists()
    assert journal_states(cfg)[b(victim)] == "undone"


def test_undo_brings_back_a_file_an_interrupted_delete_left_aside(tmp_path):
    """Killed between the rename aside and the unlink: the file is not deleted yet, and undo puts it back."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 43)
    (journal,) = (cfg.store_path() / "journal").glob("purge-*.jsonl")

    assert commands.undo_purge(cfg, str(journal), echo=lambda s: None) == 0

    assert victim.exists() and not list(victim.parent.glob(".dedupd-purge-*"))
    assert journal_states(cfg)[b(victim)] == "undone"


def test_trash_empty_after_a_kill_never_leaves_a_sidecar_to_come_back_beside_another_picture(tmp_path):
    """purge --trash (another filesystem) is killed while b/IMG_4.JPG's XMP sits aside, its copy in the trash; the
    photo's act is done. `trash empty` removed the photo alone; a new picture was then saved at b/IMG_4.JPG, and the
    next purge's recovery read "emptied" as "the photo stayed" and put the XMP back beside that other picture."""
    trash = other_fs_trash(tmp_path, "empty-open")
    try:
        root = tmp_path / "t"
        _copies_with(root, "IMG_4.JPG", "IMG_4.JPG.xmp", XMP)
        cfg, report = config(tmp_path), tmp_path / "report.json"
        scan(cfg, root, report=report)
        killed = purge_process(cfg, report, "--trash", str(trash), fault="after-aside:2")
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        sidecar = root / "b" / "IMG_4.JPG.xmp"
        assert not (root / "b" / "IMG_4.JPG").exists() and journal_states(cfg)[b(sidecar)] == "intent"
        empty_trash(cfg)
        photo(root / "b" / "IMG_4.JPG", 92)  # another picture saved at the photo's free name

        rc, lines = purge(cfg, report=report)

        assert not sidecar.exists() and not list((root / "b").glob(".dedupd-purge-*")), lines
    finally:
        shutil.rmtree(trash, ignore_errors=True)


@pytest.mark.parametrize("fault", ["after-copy:1", "after-aside:1"])
def test_undo_of_a_move_to_another_filesystem_killed_midway_leaves_nothing_hidden(tmp_path, fault):
    """purge --trash to another filesystem copies b/x.jpg into the trash, verifies it, renames the original aside and
    unlinks it. Killed after the rename, undo restored the trash's copy and closed the act: the original stayed under
    its hidden `.dedupd-purge-*` name for good. Killed after the copy, undo said there was nothing to restore and
    left the act open: the next purge finished the very move the user had undone."""
    trash = other_fs_trash(tmp_path, "undo-midway")
    try:
        root, keep, victim, cfg = scanned_copies(tmp_path, 93)
        report = tmp_path / "report.json"
        scan(cfg, root, report=report)
        killed = purge_process(cfg, report, "--trash", str(trash), fault=fault)
        assert killed.returncode == -signal.SIGKILL and (trash / "b" / "x.jpg").exists(), killed.stderr
        (journal,) = journals(cfg.store_path() / "journal")

        lines = undo(cfg, journal)

        assert victim.exists() and not (trash / "b" / "x.jpg").exists(), lines
        assert not list((root / "b").glob(".dedupd-purge-*")) and journal_states(cfg)[b(victim)] == "undone", lines
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def test_a_trash_place_an_open_act_will_use_is_not_given_to_another_file(tmp_path):
    """A --trash purge is killed after journaling b/x.jpg's intent; b/ is then moved out of the roots (its entry
    stays open) and a new copy is imported at b/x.jpg. The next purge trashed the new copy at the open act's place,
    trash/b/x.jpg: once the old folder was back, recovery took that file for the interrupted act's verified copy and
    deleted the old b/x.jpg as "the interrupted move" (not undoable: its trash file was another act's)."""
    root, keep, victim, cfg = scanned_copies(tmp_path, 97)
    inode = victim.stat().st_ino  # the new copy gets the same path: the two acts are told apart by inode
    trash = tmp_path / "trash"
    report = tmp_path / "report.json"
    scan(cfg, root, report=report)
    killed = purge_process(cfg, report, "--trash", str(trash), fault="after-intent:1")
    assert killed.returncode == -signal.SIGKILL and victim.exists(), killed.stderr
    (root / "b").rename(tmp_path / "away")
    (root / "b").mkdir()
    shutil.copy2(keep, root / "b" / "x.jpg")  # the same picture imported again
    scan(cfg, root)

    rc, lines = purge(cfg, trash=trash)
    assert (trash / "b" / "x (dedupd 1).jpg").exists() and not (trash / "b" / "x.jpg").exists(), lines
    (root / "b").rmdir()
    (tmp_path / "away").rename(root / "b")
    rc, lines = purge(cfg, report=hand_report(tmp_path / "nothing.json", []))

    assert victim.exists() and victim.stat().st_ino == inode, lines
    acts = [
        (i.inode, last.state)
        for path in journals(cfg.store_path() / "journal")
        for i, last in latest_states(path).values()
    ]
    assert (inode, "skipped") in acts, lines
