"""A file is held back exactly when a rule says so, and by no less: decisions name files by path as well as by bytes
(a file edited since is still the one decided on); byte copies of a held-back picture still make a group of their
own; a picture the store merely pairs with a keeper is not that keeper; undo's keep-all names the restored file
where it came back; and every near-duplicate the report lists is proven at the gate by the stored vectors. Each
docstring tells what happened before the fix."""

from __future__ import annotations

import json
import shutil

import imagegen
import pytest
import rawgen
from PIL import Image
from support import PixelEmbedder
from test_never_last_copy import config, copies, photo, purge, scan
from test_never_last_copy_more import undo
from test_one_keeper import _burst_and_export
from test_review import save_with_exif
from test_undo import _journal

from dedupd import commands


def _resized(src, dst, size=(240, 180), quality=85):
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.resize(size).save(dst, quality=quality)
    return dst


def _titled(path, title=b"Grandma's garden"):
    """An editor saves a title into the JPEG in place: new bytes, the same picture."""
    with Image.open(path) as im:
        im.load()
    im.save(path, quality=92, comment=title)


def _decide(cfg, action, targets):
    lines: list[str] = []
    commands.decide(cfg, action, [str(t) for t in targets], echo=lines.append, model=PixelEmbedder.model_id)
    return lines


# --- decisions by path ---------------------------------------------------------------------------------------------


def test_keep_all_by_group_id_still_holds_a_member_titled_since(tmp_path):
    """The user reviews a group (a/x.jpg and its smaller export b/x.jpg) and runs `dedupd decide keep-all GROUP_ID`
    with the id the report shows: keep both. Later the user saves a title into b/x.jpg (in place: new bytes, the same
    picture) and the next purge (purge.auto) trashes it. README: decisions are stored "with the paths they named, so
    a file edited in place since is still the one you decided on" - but keep-all by group id names the id, not the
    members' paths (commands._decision_targets stores `list(targets)`), so groups._named never matches b/x.jpg by
    path, and by content it no longer matches. A file the user said to keep is removed."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    keep = photo(root / "a" / "x.jpg", 41)
    export = _resized(keep, root / "b" / "x.jpg")
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "r1.json")
    [group] = report["groups"]
    assert group["duplicates"] == [str(export)], group
    said = _decide(cfg, "keep-all", [group["id"]])

    _titled(export)
    report = scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert export.exists(), f"b/x.jpg, kept by `decide keep-all {group['id']}`, was purged once titled: {said} {lines}"


def test_keep_all_by_relative_path_still_holds_the_other_member_titled_since(tmp_path, monkeypatch):
    """In the photo folder the user types `dedupd decide keep-all x.jpg` (a member's path, relative, as a shell user
    does) to keep both x.jpg and its export x_small.jpg. Later x_small.jpg gets a title saved in place and the next
    purge trashes it. The decision's paths are what was typed (`x.jpg`, relative; and only that one member), so
    groups._named can never match the edited member by path. A file the user said to keep is removed."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    keep = photo(root / "x.jpg", 42)
    export = _resized(keep, root / "x_small.jpg")
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "r1.json")
    assert report["groups"][0]["duplicates"] == [str(export)], report
    monkeypatch.chdir(root)
    said = _decide(cfg, "keep-all", ["x.jpg"])

    _titled(export)
    scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert export.exists(), f"x_small.jpg, kept by `decide keep-all x.jpg`, was purged once titled: {said} {lines}"


def test_not_duplicate_by_relative_paths_still_holds_after_a_title(tmp_path, monkeypatch):
    """`cd photos; dedupd decide not-duplicate a.jpg b.jpg`: two near-identical shots the user says are two
    pictures. Then b.jpg gets a title saved in place; the next purge removes it against a.jpg. The decision stores the
    relative paths as typed, which never equal a record's absolute path (groups._named), and b.jpg's new bytes are not
    among its contents: the user's not-duplicate is lost and one of the two pictures goes."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    first = photo(root / "a.jpg", 43)
    second = _resized(first, root / "b.jpg", size=(300, 225), quality=90)
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "r1.json")
    assert report["groups"][0]["duplicates"] == [str(second)], report
    monkeypatch.chdir(root)
    said = _decide(cfg, "not-duplicate", ["a.jpg", "b.jpg"])
    assert scan(cfg, root, report=tmp_path / "r2.json")["groups"] == []

    _titled(second)
    scan(cfg, root, report=tmp_path / "r3.json")
    rc, lines = purge(cfg, trash=trash)

    assert second.exists() and first.exists(), f"decided not-duplicate, then b.jpg titled and purged: {said} {lines}"


# --- groups: a keeper stands for one picture -----------------------------------------------------------------------


def test_a_byte_copy_of_a_held_back_burst_frame_is_removed(tmp_path):
    """An export without EXIF (a_export.jpg), burst frames 1 and 2, and a backup folder holding a byte copy of frame
    2. Frame 1 goes against the export; frame 2 is rightly held back. But its byte copy zz_backup/c_frame2.jpg is held
    back too ("burst guard ... and b_frame1.jpg goes against this keeper") and never gets a group of its own: groups
    only regroup members *not* close to the keeper (`chained`), and both frame-2 files are close to the export. No
    purge ever removes an exact copy (the plainest dedup there is): an over-broad refusal."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    export, one, two = _burst_and_export(root)
    backup = root / "zz_backup" / "c_frame2.jpg"
    backup.parent.mkdir()
    shutil.copy2(two, backup)
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "r.json")

    rc, lines = purge(cfg, trash=trash)
    scan(cfg, root, report=tmp_path / "r2.json")
    rc2, lines2 = purge(cfg, trash=trash)  # a second pass, as purge.auto would

    assert two.exists() or backup.exists(), lines + lines2
    assert not (two.exists() and backup.exists()), (
        f"two byte copies of burst frame 2 are both kept for good: {json.dumps(report['groups'])} {lines} {lines2}"
    )


def test_a_byte_copy_of_a_not_duplicate_file_is_removed(tmp_path):
    """The user decides a.jpg and b.jpg (two near-identical shots) are not duplicates. b.jpg also has a byte copy in a
    backup folder. The copy is held back against a.jpg by the decision, and since it is close to a.jpg it is never
    regrouped with b.jpg (groups._regroup only takes members not close to the keeper): the exact copy of b.jpg stays
    for good."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    first = photo(root / "a.jpg", 44)
    second = _resized(first, root / "b.jpg", size=(300, 225), quality=90)
    backup = root / "zz_backup" / "b.jpg"
    backup.parent.mkdir()
    shutil.copy2(second, backup)
    cfg = config(tmp_path)
    scan(cfg, root, report=tmp_path / "r1.json")
    _decide(cfg, "not-duplicate", [first, second])

    report = scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert first.exists() and (second.exists() or backup.exists()), lines
    assert not (second.exists() and backup.exists()), (
        f"the byte copy of b.jpg is never removed: {json.dumps(report)} {lines}"
    )


# --- the gate: every picture a keeper stands for -------------------------------------------------------------------


def _frames(root):
    """Two frames of one burst (one camera, 0.1 s apart: two captures the burst guard holds apart, paired above the
    threshold by the PixelEmbedder)."""
    frame1 = imagegen.photo(7, (320, 240))
    frame2 = Image.blend(frame1, imagegen.photo(8, (320, 240)), 0.1)
    return frame1, frame2


def test_a_byte_copy_of_frame_1_is_not_refused_for_what_went_against_frame_2(tmp_path):
    """Monday the user imports burst frame 2 twice (camera/ and phone/): purge trashes the byte copy. Tuesday the
    user imports frame 1 twice the same way: purge refuses the byte copy of frame 1 ("phone/f2.jpg went against the
    same keeper, and this is another picture (burst guard)"), today and forever. The gate's _removed_against counts
    an earlier act against *any content the store pairs with the keeper* (evidence.partners: frame 2, a different
    capture, still on disk) as removed against frame 1. An exact copy, never removable: an over-broad refusal."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    frame1, frame2 = _frames(root)
    (root / "camera").mkdir(parents=True)
    (root / "phone").mkdir()
    save_with_exif(frame2, root / "camera" / "f2.jpg", "2024:05:01 10:00:00", "20")
    shutil.copy2(root / "camera" / "f2.jpg", root / "phone" / "f2.jpg")
    cfg = config(tmp_path)
    scan(cfg, root, report=tmp_path / "r1.json")
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not (root / "phone" / "f2.jpg").exists(), lines

    save_with_exif(frame1, root / "camera" / "f1.jpg", "2024:05:01 10:00:00", "10")
    shutil.copy2(root / "camera" / "f1.jpg", root / "phone" / "f1.jpg")
    report = scan(cfg, root, report=tmp_path / "r2.json")
    assert ("%s" % (root / "camera" / "f1.jpg"), "%s" % (root / "phone" / "f1.jpg")) in [
        (g["keep"], d) for g in report["groups"] for d in g["duplicates"]
    ], report
    rc, lines = purge(cfg, trash=trash)

    assert not (root / "phone" / "f1.jpg").exists(), f"an exact copy of frame 1 was refused: {lines}"


# --- undo ----------------------------------------------------------------------------------------------------------


def test_an_undone_photo_back_beside_a_taken_name_stays_once_titled(tmp_path):
    """b/x.jpg (a smaller export of a/x.jpg) is trashed. Since, the user saved another picture at b/x.jpg. `purge
    --undo` brings the export back as `b/x (dedupd 1).jpg` and records keep-all "so no purge removes it again" - but
    the decision names b/x.jpg (entry.victim_path, commands._keep_both), the *other* picture's path, not where the
    photo came back. The user then saves a title into `b/x (dedupd 1).jpg`: new bytes, and a path the decision does
    not name. The next purge trashes it again: the file the user took back is removed."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    keep = photo(root / "a" / "x.jpg", 45)
    export = _resized(keep, root / "b" / "x.jpg")
    cfg = config(tmp_path)
    scan(cfg, root, report=tmp_path / "r1.json")
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not export.exists(), lines
    photo(export, 46)  # another picture saved at b/x.jpg since
    said = undo(cfg, _journal(cfg))
    back = root / "b" / "x (dedupd 1).jpg"
    assert back.exists(), said

    _titled(back)
    scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert back.exists(), f"the photo undo brought back (as {back.name}) was purged again once titled: {said} {lines}"


def test_undo_of_a_byte_copy_holds_back_that_file_only(tmp_path):
    """a/x.jpg and its byte copy b/x.jpg: purge trashes b/x.jpg, the user takes it back with `purge --undo` (that one
    file, in that folder). Undo records keep-all on the contents {a's bytes} alone (both files hold the same bytes),
    which holds back every exact copy of the picture from then on: the user later downloads the same photo again
    (c/x.jpg) and no purge ever removes it ("decided: keep-all"). The project refuses exactly this for `decide
    not-duplicate F F` ("{content} alone would hold back every exact copy"); undo still stores it."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    keep, copy = copies(root, 47)
    cfg = config(tmp_path)
    scan(cfg, root, report=tmp_path / "r1.json")
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not copy.exists(), lines
    said = undo(cfg, _journal(cfg))
    assert copy.exists(), said

    again = root / "c" / "x.jpg"
    again.parent.mkdir()
    shutil.copy2(keep, again)
    scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert keep.exists() and copy.exists(), lines
    assert not again.exists(), f"a third byte copy, downloaded after the undo, is never removed: {said} {lines}"


# --- a large group of resizes --------------------------------------------------------------------------------------


def test_every_resize_the_report_lists_is_proven_by_the_stored_vectors(tmp_path):
    """One photo (keep.png) and 40 smaller exports of it (a web gallery's sizes). The report lists all 40 as
    duplicates of keep.png, but purge removes only those whose pair to keep.png is among the dedup.k (10) nearest
    neighbours the store kept; the rest are refused "not the same picture: the store holds no pair" (the groups are
    built from a cosine computed per member, the gate's Evidence from stored pairs only). Purge after purge removes a
    few more, and then 5 exports are left that no report lists and no purge removes: their stored neighbours were the
    exports purged before them, and no pair to keep.png was ever stored. Near-identical copies stay for good."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    picture = imagegen.photo(5, (640, 480))
    (root / "web").mkdir(parents=True)
    picture.save(root / "keep.png")
    for i in range(40):
        picture.resize((300 + i, 225 + i)).save(root / "web" / f"{i:03d}.jpg", quality=85)
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "r0.json")
    [group] = report["groups"]
    assert group["keep"] == str(root / "keep.png") and len(group["duplicates"]) == 40, report

    said, counts = [], []
    for n in range(5):  # purge, scan again, purge again: what purge.auto does over a few hours
        rc, lines = purge(cfg, trash=trash)
        said += lines
        listed = scan(cfg, root, report=tmp_path / f"r{n + 1}.json")
        counts.append((len(list((root / "web").iterdir())), sum(len(g["duplicates"]) for g in listed["groups"])))

    left = sorted(p.name for p in (root / "web").iterdir())
    assert (root / "keep.png").exists()
    assert not left, (
        f"(files left, duplicates the report lists) after each purge: {counts}; "
        f"{[s for s in said if 'skipped' in s][:2]}"
    )


# --- file-level holds, decisions by path, keep-all of byte copies ---------------------------------------------------


def test_the_camera_jpeg_beside_its_raw_stays_when_a_backup_copy_has_a_sidecar(tmp_path):
    """shoot/IMG_0042.CR2 + shoot/IMG_0042.JPG (one shot, RAW+JPEG, dedup.raw_jpeg: keep, the default) and a backup of
    the JPEG (backup/IMG_0042.JPG, byte copy) that the user tagged in darktable (backup/IMG_0042.JPG.xmp); the RAW has
    its own development sidecar (IMG_0042.CR2.xmp), so the `format` policy keeps the RAW. README: the JPEG of a RAW+JPEG
    pair is "reported under `similar` ... and never purged". Both JPEG files are held back from the RAW keeper
    (raw+jpeg; companions), so groups._held_apart regroups them as a group of their own, where the backup (with the
    sidecar) is keeper and nothing holds the camera JPEG: purge trashes shoot/IMG_0042.JPG, breaking the RAW+JPEG pair
    the config says to keep. File-level holds (raw+jpeg, companions) are not "another picture"."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    shoot, backup = root / "shoot", root / "backup"
    shoot.mkdir(parents=True)
    backup.mkdir()
    picture = imagegen.photo(7, (320, 240))
    rawgen.write_dng(shoot / "IMG_0042.CR2", picture, sensor=(640, 480))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    picture.save(shoot / "IMG_0042.JPG", quality=90, exif=exif.tobytes())
    shutil.copy2(shoot / "IMG_0042.JPG", backup / "IMG_0042.JPG")
    (backup / "IMG_0042.JPG.xmp").write_text("<x:xmpmeta>rating 5, tag grandma</x:xmpmeta>")
    (shoot / "IMG_0042.CR2.xmp").write_text("<x:xmpmeta>raw development settings</x:xmpmeta>")
    cfg = config(tmp_path, **{"dedup.keep_policy": ["format"]})
    report = scan(cfg, root, report=tmp_path / "r.json")

    rc, lines = purge(cfg, trash=trash)

    assert (shoot / "IMG_0042.CR2").exists(), (report, lines)
    assert (shoot / "IMG_0042.JPG").exists(), (
        f"the camera JPEG of a RAW+JPEG pair was purged: {json.dumps(report['groups'])} {lines}"
    )


def test_decide_keep_still_holds_the_file_once_titled_in_place(tmp_path):
    """a/x.jpg and its export b/x.jpg: the user wants the export and runs `dedupd decide keep b/x.jpg`. Then the user
    saves a title into b/x.jpg (in place: new bytes, the same picture) and the next purge trashes b/x.jpg against
    a/x.jpg. README: decisions are stored "with the paths they named, so a file edited in place since is still the one
    you decided on", and _decision_targets now stores the absolute path; but Rules.make builds policy.keep from the
    decisions' contents only (groups.Rules.make / _files_kept: `member.content in self.policy.keep`), so the path
    is never consulted. The file the user said to keep is removed."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    keep = photo(root / "a" / "x.jpg", 51)
    export = _resized(keep, root / "b" / "x.jpg")
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "r1.json")
    assert report["groups"][0]["duplicates"] == [str(export)], report
    said = _decide(cfg, "keep", [export])

    _titled(export)
    scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert export.exists(), f"b/x.jpg, kept by `decide keep`, was purged once titled: {said} {lines}"


def test_keep_all_of_a_backup_copy_survives_moving_the_backup_folder(tmp_path):
    """photos/x.jpg and its byte copy backup/x.jpg: the user reviews the group and runs `dedupd decide keep-all
    GROUP_ID` (keep the backup too). Later the user renames the folder backup/ to backup-2024/. The next purge trashes
    backup-2024/x.jpg. README: decisions "are stored against content hashes, so they survive renames, moves and
    rescans"; but groups._decided_apart now holds byte copies apart only while both files sit at the paths the
    decision names. A file the user said to keep is removed after an ordinary folder rename."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    kept, copy = copies(root, 52, "photos/x.jpg", "backup/x.jpg")
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "r1.json")
    [group] = report["groups"]
    assert {group["keep"], *group["duplicates"]} == {str(kept), str(copy)}, report
    said = _decide(cfg, "keep-all", [group["id"]])
    assert scan(cfg, root, report=tmp_path / "r2.json")["groups"] == []

    (root / "backup").rename(root / "backup-2024")
    moved = root / "backup-2024" / "x.jpg"
    scan(cfg, root, report=tmp_path / "r3.json")
    rc, lines = purge(cfg, trash=trash)

    assert kept.exists() and moved.exists(), f"the backup kept by keep-all was purged after a rename: {said} {lines}"


def test_a_photo_taken_back_by_undo_is_not_purged_again_against_its_neighbour(tmp_path):
    """Along one line of near-duplicates a.png ~ c.png ~ b.png (a and b two pictures, ~0.96). Purge trashes c.png
    against a.png; the user takes it back with `purge --undo`, which records keep-all {a, c} "so that no later purge
    (the daemon's `purge.auto` included) takes it again" (README). The next purge trashes c.png again: c is held back
    from a by the decision, so groups._held_apart regroups it with b.png (its near-duplicate, far from a), where b.png
    is keeper and nothing holds c back. The file the user restored on purpose is removed a second time."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    imagegen.write_chain(root, ["a.png", "c.png", "b.png"])
    a, c = root / "a.png", root / "c.png"
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "r1.json")
    assert [(g["keep"], g["duplicates"]) for g in report["groups"]] == [(str(a), [str(c)])], report
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not c.exists(), lines
    said = undo(cfg, _journal(cfg))
    assert c.exists(), said

    report = scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert c.exists(), f"c.png, taken back by undo, was purged again: {said} {json.dumps(report['groups'])} {lines}"


@pytest.mark.xfail(
    strict=True,
    reason="known gap: a keeper edited so that its capture time changes, and moved, is another capture to the burst "
    "guard; the earlier act found through its stored pair is not credited to it (see the stop-28 note)",
)
def test_a_keeper_whose_clock_was_fixed_and_moved_still_carries_what_went_against_it(tmp_path):
    """Monday: camera/q.jpg (Canon, EXIF 10:00) and phone/p.jpg (a near-duplicate export without EXIF): purge trashes
    p.jpg against q.jpg. Then the user fixes the camera's clock (exiftool: the capture time +1 h, in place) and files
    the photo into 2024/q.jpg: new bytes, new path, the same pixels. Tuesday 0_import/z.jpg arrives, close to q.jpg
    but not to p.jpg (~0.96: another picture), and the next purge trashes 2024/q.jpg against z.jpg. p.jpg's picture
    is then in no file outside the trash: the chain the gate promises to stop (C removed for B, then B for A). execute.
    _earlier_acts_carried drops the act found through the stored pair (old q bytes, new q bytes) because the burst
    guard calls the re-timed file "a different capture" of the keeper it was: a metadata fix is taken for another
    burst frame, and the chain guard lets the last file of p's picture go."""
    root, trash, src = tmp_path / "t", tmp_path / "trash", tmp_path / "src"
    imagegen.write_chain(src, ["p.png", "q.png", "z.png"])
    with Image.open(src / "p.png") as im:
        (root / "phone").mkdir(parents=True)
        im.save(root / "phone" / "p.jpg", quality=95)
    with Image.open(src / "q.png") as im:
        q_pixels = im.copy()
    (root / "camera").mkdir()
    q = save_with_exif(q_pixels, root / "camera" / "q.jpg", "2024:05:01 10:00:00", quality=95)
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "r1.json")
    assert [(g["keep"], g["duplicates"]) for g in report["groups"]] == [(str(q), [str(root / "phone" / "p.jpg")])]
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not (root / "phone" / "p.jpg").exists(), lines

    q.unlink()  # the clock fixed in place (same pixels, new capture time), then filed by date
    (root / "2024").mkdir()
    fixed = save_with_exif(q_pixels, root / "2024" / "q.jpg", "2024:05:01 11:00:00", quality=95)
    with Image.open(src / "z.png") as im:
        (root / "0_import").mkdir()
        im.save(root / "0_import" / "z.jpg", quality=95)
    report = scan(cfg, root, report=tmp_path / "r2.json")
    with Image.open(trash / "phone" / "p.jpg") as p_im, Image.open(root / "0_import" / "z.jpg") as z_im:
        far = PixelEmbedder().embed([p_im, z_im])
    assert float(far[0] @ far[1]) < cfg.dedup.threshold  # p and z: two pictures
    rc, lines = purge(cfg, trash=trash)

    assert fixed.exists(), (
        f"2024/q.jpg, the last file of p.jpg's picture, went against z.jpg: {json.dumps(report['groups'])} {lines}"
    )
