"""Never the last copy: the holes hostile testing found (issue 10), each through the real commands on real files.

Every removal passes one gate that proves, at the moment of acting, that the picture survives: the victim's and
the keeper's current bytes are the ones the plan was made on, the store pairs them (same content, or a stored pair
at or above the threshold with no decision against it), and the keeper is not something dedupd wrote itself.
"""

from __future__ import annotations

import json
import os
import shutil
import threading

import imagegen
import pytest
import support
from PIL import Image
from support import PixelEmbedder, b

from dedupd import commands
from dedupd.config import load_config
from dedupd.model.loader import LazyEmbedder
from dedupd.service.daemon import Service
from dedupd.store import Store

QUIET = lambda line: None  # noqa: E731


def config(tmp_path, **overrides):
    return load_config(None, {"store": str(tmp_path / "store"), **overrides})


def scan(cfg, root, report=None, inplace=False, trash=None) -> dict:
    commands.scan(
        str(root),
        cfg,
        str(report) if report else None,
        inplace,
        str(trash) if trash else None,
        echo=QUIET,
        embedder=LazyEmbedder(cfg, PixelEmbedder()),
    )
    return json.loads((report or root / "dedup_report.json").read_bytes())


def purge(cfg, report=None, trash=None):
    return support.purge_lines(cfg, str(report) if report else None, True, str(trash) if trash else None)


def photo(path, seed, size=(320, 240)):
    path.parent.mkdir(parents=True, exist_ok=True)
    imagegen.photo(seed, size).save(path, quality=92)
    return path


def copies(root, seed, keep="a/x.jpg", dup="b/x.jpg"):
    """(keeper, copy): a photo and a byte copy of it in another folder, so either can be named the keeper."""
    kept = photo(root / keep, seed)
    copy = root / dup
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(kept, copy)
    return kept, copy


def pictures_outside(root, trash) -> set[bytes]:
    """The distinct contents (bytes) of every image under root, not counting the trash."""
    images = (p for p in root.rglob("*") if p.suffix in (".jpg", ".png", ".tif") and p.is_file())
    return {p.read_bytes() for p in images if trash not in p.parents}


def empty_trash(cfg):
    lines: list[str] = []
    try:
        rc = commands.empty_trash(cfg, "0", echo=lines.append)
    except Exception as exc:  # PurgeFailures
        lines.append(str(exc))
        rc = getattr(exc, "exit_code", 99)
    return rc, lines


# --- hole 1: a trash inside a root ---------------------------------------------------------------------------------


def test_hole1_trash_inside_a_root_never_loses_the_picture(tmp_path):
    root = tmp_path / "t"
    a = photo(root / "photos" / "a.jpg", 1)
    shutil.copy2(a, root / "photos" / "b.jpg")
    trash = root / "Trash"
    cfg = config(tmp_path)
    picture = a.read_bytes()
    scan(cfg, root)
    assert purge(cfg, trash=trash)[0] == 0
    scan(cfg, root)
    assert not any(p.startswith(b(trash)) for p in Store.open(cfg.store_path()).files()), "the trash was indexed"
    purge(cfg)
    empty_trash(cfg)
    assert picture in pictures_outside(root, trash)


# --- hole 2: stale and hand-written reports ------------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path):
    root = tmp_path / "t"
    keep, dup = copies(root, 2, "a/k.jpg", "b/d.jpg")
    cfg = config(tmp_path)
    old = tmp_path / "old.json"
    report = scan(cfg, root, report=old)
    assert (str(keep), str(dup)) in support.pairs(report)
    return root, keep, dup, cfg, old


def test_hole2_stale_report_does_not_delete_a_picture_that_became_unique(pair, tmp_path):
    root, keep, dup, cfg, old = pair
    other = photo(tmp_path / "other.jpg", 3)
    shutil.copy2(other, dup)
    scan(cfg, root)
    rc, lines = purge(cfg, report=old)
    assert rc == 1 and dup.read_bytes() == other.read_bytes(), lines


def test_hole2_stale_report_with_the_keeper_overwritten_keeps_the_last_copy(pair, tmp_path):
    root, keep, dup, cfg, old = pair
    original = dup.read_bytes()
    shutil.copy2(photo(tmp_path / "other.jpg", 3), keep)
    scan(cfg, root)
    rc, lines = purge(cfg, report=old)
    assert rc == 1 and dup.read_bytes() == original, lines


def test_hole2_hand_written_report_naming_two_unrelated_pictures_is_refused(tmp_path):
    root = tmp_path / "t"
    x, y = photo(root / "x.jpg", 4), photo(root / "y.jpg", 5)
    cfg = config(tmp_path)
    scan(cfg, root)
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"groups": [{"keep": str(x), "duplicates": [str(y)]}]}))
    rc, lines = purge(cfg, report=hand)
    assert rc == 1 and y.exists(), lines
    assert any("not the same picture" in line for line in lines), lines


# --- hole 3: the daemon's own gallery ------------------------------------------------------------------------------


def test_hole3_gallery_inside_a_root_is_never_indexed_and_never_a_keeper(tmp_path):
    root = tmp_path / "r"
    a = photo(root / "photos" / "z.jpg", 6, (600, 400))
    shutil.copy2(a, root / "photos" / "zz.jpg")
    gallery = root / "a_review"
    cfg = config(
        tmp_path,
        roots=[str(root)],
        **{
            "report.html_dir": str(gallery),
            "watch.settle_seconds": 0.3,
            "watch.poll_interval": 0.2,
            "report.min_interval": 0.0,
        },
    )
    service = Service(cfg, embedder=LazyEmbedder(cfg, PixelEmbedder()))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        support.wait_for(lambda: list(gallery.rglob("*.jpg")), what="gallery thumbnails")
        support.wait_for(lambda: service.health.phase == "watching", what="watching")
        import time

        time.sleep(2.0)  # let the watcher see the thumbnails: they must not be indexed
        files = Store.open(cfg.store_path()).files()
    finally:
        service.stop.set()
        thread.join(15)
    assert not any(p.startswith(b(gallery)) for p in files), "the gallery was indexed"


def test_hole3_the_daemons_gallery_stays_out_of_the_index_after_html_dir_changes(tmp_path):
    """report.html_dir inside a root: the daemon wrote its gallery there but (unlike `report --format html --out`)
    neither marked the folder nor remembered it. Once the user points html_dir elsewhere (or drops it), the old
    gallery's thumbnails were indexed, won the keep policy (lexi: a_review < photos) and the originals were purged
    against a 256-pixel thumbnail."""
    root = tmp_path / "r"
    a = photo(root / "photos" / "z.jpg", 6, (600, 400))
    shutil.copy2(a, root / "photos" / "zz.jpg")
    picture = a.read_bytes()
    gallery = root / "a_review"
    live = {"watch.settle_seconds": 0.3, "watch.poll_interval": 0.2, "report.min_interval": 0.0}
    cfg = config(tmp_path, roots=[str(root)], **{"report.html_dir": str(gallery), **live})
    service = Service(cfg, embedder=LazyEmbedder(cfg, PixelEmbedder()))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        support.wait_for(lambda: list(gallery.rglob("*.jpg")), what="gallery thumbnails")
    finally:
        service.stop.set()
        thread.join(15)
    later = config(tmp_path, roots=[str(root)], **live)  # html_dir moved elsewhere; the old gallery stays put
    scan(later, root)
    rc, lines = purge(later)
    assert any(p.read_bytes() == picture for p in (root / "photos").iterdir()), lines


# --- hole 4: multi-frame files -------------------------------------------------------------------------------------


def test_hole4_multi_frame_tiff_whose_first_page_is_a_photo_is_a_different_picture(tmp_path):
    root = tmp_path / "t"
    a = photo(root / "a.jpg", 7)
    pages = [Image.open(a).convert("RGB"), imagegen.photo(8, (320, 240)), imagegen.photo(9, (320, 240))]
    tif = root / "album.tif"
    pages[0].save(tif, save_all=True, append_images=pages[1:])
    cfg = config(tmp_path)
    report = scan(cfg, root)
    assert str(tif) not in {d for _, d in support.pairs(report)} | {k for k, _ in support.pairs(report)}
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"groups": [{"keep": str(a), "duplicates": [str(tif)]}]}))
    rc, lines = purge(cfg, report=hand)
    assert rc == 1 and tif.exists(), lines


# --- hole 5: a keeper rewritten in place -----------------------------------------------------------------------------


def test_hole5_keeper_rewritten_with_same_size_and_mtime_is_caught(pair, tmp_path):
    root, keep, dup, cfg, old = pair
    original = dup.read_bytes()
    st = os.stat(keep)
    other = photo(tmp_path / "o.png", 10, (100, 80)).read_bytes()  # smaller: padded to the same size
    assert len(other) < st.st_size
    keep.write_bytes(other + b"\0" * (st.st_size - len(other)))
    os.utime(keep, ns=(st.st_atime_ns, st.st_mtime_ns))
    for report in (old, None):
        rc, lines = purge(cfg, report=report)
        assert rc == 1 and dup.read_bytes() == original, lines


# --- the gate's other duties ----------------------------------------------------------------------------------------


def test_trash_expiry_keeps_a_trashed_file_whose_keeper_lost_the_picture(pair, tmp_path):
    root, keep, dup, cfg, old = pair
    trash = tmp_path / "trash"
    original = dup.read_bytes()
    assert purge(cfg, report=old, trash=trash)[0] == 0
    trashed = trash / "b" / "d.jpg"
    assert trashed.read_bytes() == original
    shutil.copy2(photo(tmp_path / "other.jpg", 11), keep)  # the keeper is overwritten: the trash holds the last copy
    rc, lines = empty_trash(cfg)
    assert rc == 1 and trashed.read_bytes() == original, lines
    assert any(line.startswith("kept") and "last copy" in line for line in lines), lines
    keep.write_bytes(original)  # the picture is back in the keeper: now the trashed copy may go
    assert empty_trash(cfg)[0] == 0 and not trashed.exists()


def test_trash_expiry_keeps_the_file_when_the_keeper_itself_was_trashed_later(pair, tmp_path):
    root, keep, dup, cfg, old = pair
    trash = tmp_path / "trash"
    assert purge(cfg, report=old, trash=trash)[0] == 0
    os.rename(keep, tmp_path / "elsewhere.jpg")  # the keeper is gone from where the purge left it
    rc, lines = empty_trash(cfg)
    assert rc == 1 and (trash / "b" / "d.jpg").exists(), lines


def test_an_old_report_without_content_hashes_is_held_to_the_store(pair, tmp_path):
    root, keep, dup, cfg, old = pair
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"groups": [{"keep": str(keep), "duplicates": [str(dup)]}]}))
    assert purge(cfg, report=plain)[0] == 0
    assert keep.exists() and not dup.exists()


def test_a_keeper_in_a_folder_dedupd_writes_is_refused_even_when_indexed(pair, tmp_path):
    root, keep, dup, cfg, old = pair
    cfg = config(tmp_path, **{"report.html_dir": str(keep.parent)})  # the keeper's folder is now the gallery
    rc, lines = purge(cfg, report=old)
    assert rc == 1 and dup.exists()
    assert any("dedupd writes itself" in line for line in lines), lines


@pytest.mark.parametrize(
    "group, problem",
    [
        ({"keep": "/x.jpg"}, "'duplicates' must be a list of paths, not null (or missing)"),
        ({"keep": "/x.jpg", "duplicates": None}, "'duplicates' must be a list of paths, not null (or missing)"),
        ({"keep": "/x.jpg", "duplicates": "/y.jpg"}, "'duplicates' must be a list of paths, not a string"),
        ({"duplicates": ["/y.jpg"]}, "'keep' must be a path, not null (or missing)"),
        (
            {"keep": "/x.jpg", "duplicates": [], "duplicate_details": 5},
            "'duplicate_details' must be a list, not a number",
        ),
        (
            {"keep": "/x.jpg", "duplicates": ["/y.jpg"], "duplicate_details": [{"path": "/y.jpg", "content": 7}]},
            "a 'content' in 'duplicate_details' must be a content hash string",
        ),
    ],
)
def test_a_malformed_report_is_one_line_exit_2_naming_the_file_and_group(pair, tmp_path, group, problem):
    from dedupd.cli import main

    root, keep, dup, cfg, old = pair
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"groups": [{"keep": str(keep), "duplicates": []}, group]}))
    lines: list[str] = []
    with pytest.raises(Exception) as caught:
        commands.purge(cfg, str(bad), True, None, echo=lines.append)
    assert getattr(caught.value, "exit_code", None) == 2
    assert str(caught.value) == f"{bad}: group 2: {problem}"
    assert main(["purge", "--store", str(cfg.store_path()), "--report", str(bad), "--inplace"]) == 2
    assert dup.exists()


def test_the_daemon_never_indexes_a_trash_that_a_command_line_purge_used(tmp_path):
    root = tmp_path / "r"
    a = photo(root / "photos" / "a.jpg", 12)
    shutil.copy2(a, root / "photos" / "b.jpg")
    trash = root / "Trash"
    cfg = config(tmp_path, roots=[str(root)], **{"watch.settle_seconds": 0.3, "watch.poll_interval": 0.2})
    service = Service(cfg, embedder=LazyEmbedder(cfg, PixelEmbedder()))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        support.wait_for(lambda: getattr(service, "health", None) and service.health.phase == "watching")
        assert purge(cfg, trash=trash)[0] == 0
        moved = trash / "photos" / "b.jpg"
        assert moved.exists()
        marker = photo(root / "photos" / "later.jpg", 13)  # a later event: by then the trash event was seen too
        support.wait_for(lambda: b(marker) in Store.open(cfg.store_path()).files(), what="a later file indexed")
        files = Store.open(cfg.store_path()).files()
    finally:
        service.stop.set()
        thread.join(15)
    assert not any(p.startswith(b(trash)) for p in files), "the trash was indexed"
    assert a.exists()


def test_a_hand_written_chain_never_removes_a_keeper_after_its_duplicate(tmp_path):
    """C kept for B, then B named as a duplicate of A in the same report: B is refused, whatever the order."""
    root = tmp_path / "t"
    a = photo(root / "a.jpg", 14)
    for name in ("b.jpg", "c.jpg"):
        shutil.copy2(a, root / name)
    cfg = config(tmp_path)
    scan(cfg, root)
    b_, c = root / "b.jpg", root / "c.jpg"
    hand = tmp_path / "chain.json"
    groups = [{"keep": str(b_), "duplicates": [str(c)]}, {"keep": str(a), "duplicates": [str(b_)]}]
    hand.write_text(json.dumps({"groups": groups}))
    rc, lines = purge(cfg, report=hand)
    assert rc == 1 and b_.exists() and a.exists() and not c.exists(), lines
    assert any("keeper of a file this run removed" in line for line in lines), lines
