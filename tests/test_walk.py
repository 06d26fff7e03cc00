"""The walk: which files are image files, what is skipped (NAS metadata, symlinks, own folders) and why."""

from __future__ import annotations

import os

from support import b

from dedupd.ingest.walk import NAS_IGNORE, ScanOptions, scan
from dedupd.own_folders import OffLimits
from dedupd.paths import Ignore
from dedupd.store import mark_own


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def paths(entries):
    return sorted(e.path for e in entries)


IMAGE_NAMES = ("a.JPG", "b.jpeg", "c.png", "d.BMP", "e.webp", "f.tif", "g.TIFF", "h.heic", "i.HEIF", "j.avif", "k.gif")
RAW_NAMES = ("raw.cr2", "l.NEF")
# Not pictures: text, no extension, and the companions (sidecar, Live Photo video, Takeout JSON) of a.JPG.
OTHER_NAMES = ("notes.txt", "noext", "a.JPG.xmp", "a.MOV", "a.JPG.json")


def test_extensions_any_case_and_non_images_skipped(tmp_path):
    for name in IMAGE_NAMES + RAW_NAMES + OTHER_NAMES:
        touch(tmp_path / name)
    found = {os.path.basename(p) for p in paths(scan([b(tmp_path)]))}
    assert found == {n.encode() for n in IMAGE_NAMES + RAW_NAMES}


def test_nas_metadata_never_indexed(tmp_path):
    keep = touch(tmp_path / "ok" / "a.jpg")
    for bad in (
        "@eaDir/a.jpg/SYNOPHOTO_THUMB_XL.jpg",
        "#recycle/a.jpg",
        "#snapshot/a.jpg",
        ".@__thumb/a.jpg",
        ".Trash-1000/files/a.jpg",
        "ok/._a.jpg",
    ):
        touch(tmp_path / bad)
    assert paths(scan([b(tmp_path)])) == [b(keep)]
    assert "@eaDir" in NAS_IGNORE


def test_custom_ignore_and_excluded_dirs(tmp_path):
    touch(tmp_path / "keep" / "a.jpg")
    touch(tmp_path / "skip-me" / "a.jpg")
    touch(tmp_path / "trash" / "a.jpg")
    opts = ScanOptions(ignore=(*NAS_IGNORE, "skip-*"), off_limits=OffLimits((b(tmp_path / "trash"),)))
    assert paths(scan([b(tmp_path)], opts)) == [b(tmp_path / "keep" / "a.jpg")]


def test_a_root_inside_a_folder_some_store_marked_is_not_walked(tmp_path):
    """The mark counts in a folder above the root too (a scan of a store's thumbs/ folder itself), once per
    folder: a mark made after a walk is seen by the next one, which asks afresh."""
    touch(tmp_path / "store" / "thumbs" / "a.jpg")
    touch(tmp_path / "photos" / "a.jpg")
    mark_own(tmp_path / "store")
    assert paths(scan([b(tmp_path / "store" / "thumbs")])) == []
    assert paths(scan([b(tmp_path)])) == [b(tmp_path / "photos" / "a.jpg")]
    mark_own(tmp_path / "photos")
    assert paths(scan([b(tmp_path)])) == []


def test_desktop_and_volume_trashes_are_not_walked_but_a_users_folder_named_trash_is(tmp_path):
    """A copy in a recycle bin could be kept while the photo is purged; the bin is then emptied. A folder named Trash
    is one only by its freedesktop shape (info/ and files/): the name alone is a user's to use."""
    for bad in (
        ".local/share/Trash/files/a.jpg",  # the freedesktop home trash ($XDG_DATA_HOME/Trash)
        "usb/.Trash/1000/files/a.jpg",
        "usb/.Trashes/501/a.jpg",
        "usb/$RECYCLE.BIN/S-1-5-21/$RABC123.jpg",
        "nas/@Recycle/a.jpg",
        "nas/@Recently-Snapshot/GMT+01_2024-01-01/a.jpg",
        "samba/.recycle/a.jpg",
    ):
        touch(tmp_path / bad)
    (tmp_path / ".local" / "share" / "Trash" / "info").mkdir()
    keep = [touch(tmp_path / "Trash" / "a.jpg"), touch(tmp_path / "old" / "Trash" / "files" / "a.jpg")]
    assert paths(scan([b(tmp_path)])) == sorted(b(p) for p in keep)
    assert paths(scan([b(tmp_path / ".local" / "share" / "Trash" / "files")])) == []  # nor when it is the root


def test_records_stat_facts(tmp_path):
    f = touch(tmp_path / "a.jpg", b"hello")
    (entry,) = scan([b(tmp_path)])
    st = os.stat(f)
    assert (entry.size, entry.mtime_ns, entry.device, entry.inode) == (5, st.st_mtime_ns, st.st_dev, st.st_ino)
    assert entry.root == b(os.path.realpath(tmp_path))


def test_directory_symlinks_not_followed_by_default_and_loops_end(tmp_path):
    touch(tmp_path / "real" / "a.jpg")
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.symlink(tmp_path, tmp_path / "real" / "loop")
    assert len(paths(scan([b(tmp_path)]))) == 1
    followed = paths(scan([b(tmp_path)], ScanOptions(follow_symlinks=True)))
    assert len(followed) == 1  # each inode once, and the loop terminates


def test_root_listed_twice_or_nested_indexes_each_inode_once(tmp_path):
    touch(tmp_path / "sub" / "a.jpg")
    os.link(tmp_path / "sub" / "a.jpg", tmp_path / "sub" / "hard.jpg")
    entries = list(scan([b(tmp_path), b(tmp_path), b(tmp_path / "sub")]))
    assert len(entries) == 1


def test_file_symlinks_are_not_indexed(tmp_path):
    real = touch(tmp_path / "a.jpg")
    os.symlink(real, tmp_path / "b.jpg")
    assert paths(scan([b(tmp_path)])) == [b(real)]


def test_non_utf8_and_nfc_nfd_names_are_distinct(tmp_path):
    root = b(tmp_path)
    names = [b"caf\xc3\xa9.jpg", b"cafe\xcc\x81.jpg", b"bad\xff.jpg"]
    for name in names:
        with open(os.path.join(root, name), "wb") as f:
            f.write(name)
    found = paths(scan([root]))
    assert found == sorted(os.path.join(os.path.realpath(root), n) for n in names)


def test_unreadable_directory_reported_and_scan_goes_on(tmp_path):
    touch(tmp_path / "a" / "x.jpg")
    errors = []
    opts = ScanOptions(on_error=lambda p, e: errors.append(p))
    entries = list(scan([b(tmp_path / "missing"), b(tmp_path)], opts))
    assert len(entries) == 1 and errors == [b(tmp_path / "missing")]


def test_one_ignore_matcher_for_names_and_paths_below_a_root():
    ignore = Ignore.of(NAS_IGNORE)
    assert ignore.name(b"@eaDir") and ignore.name(b"._IMG_1.jpg") and not ignore.name(b"IMG_1.jpg")
    assert ignore.below(b"/photos/2024/@eaDir/IMG_1.jpg/SYNOPHOTO_THUMB_XL.jpg", b"/photos")
    assert not ignore.below(b"/photos/2024/IMG_1.jpg", b"/photos")
    assert not ignore.below(b"/volume1/#recycle/photos/a.jpg", b"/volume1/#recycle/photos")  # the root's own path
    assert not Ignore().below(b"/photos/@eaDir/a.jpg", b"/photos")


def _jpeg_bytes(seed: int = 0) -> bytes:
    import io

    import imagegen

    buffer = io.BytesIO()
    imagegen.photo(seed, (64, 48)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_sniff_finds_pictures_whose_names_lie(tmp_path):
    jpeg = _jpeg_bytes()
    touch(tmp_path / "export.dat", jpeg)
    touch(tmp_path / "DCIM0001", jpeg)
    touch(tmp_path / "notes.dat", b"BM but only words, no bitmap header here")
    touch(tmp_path / "clip.MOV", b"\0\0\0\x14ftypqt  \0\0\0\0qt  ")
    touch(tmp_path / "a.jpg", jpeg)
    assert {os.path.basename(p) for p in paths(scan([b(tmp_path)]))} == {b"a.jpg"}  # off by default
    found = {os.path.basename(p) for p in paths(scan([b(tmp_path)], ScanOptions(sniff=True)))}
    assert found == {b"a.jpg", b"export.dat", b"DCIM0001"}


def test_sniffed_pictures_are_indexed_and_grouped_by_scan_and_by_the_event_path(tmp_path):
    import json

    from support import PixelEmbedder

    from dedupd import commands
    from dedupd.config import load_config
    from dedupd.ingest.indexer import Indexer
    from dedupd.model.loader import LazyEmbedder
    from dedupd.store import Store

    root = tmp_path / "photos"
    touch(root / "a.jpg", _jpeg_bytes(1))
    touch(root / "restored" / "f0001.dat", _jpeg_bytes(1))
    cfg = load_config(None, {"store": str(tmp_path / "store"), "scan.sniff": True})
    out = tmp_path / "report.json"
    commands.scan(str(root), cfg, str(out), False, None, echo=lambda s: None,
                  embedder=commands.LazyEmbedder(cfg, PixelEmbedder()))  # fmt: skip
    [group] = json.loads(out.read_bytes())["groups"]
    assert group["duplicates"] == [str(root / "restored" / "f0001.dat")]
    late = touch(root / "restored" / "f0002", _jpeg_bytes(2))
    store = Store.open(cfg.store_path())
    indexer = Indexer(store, cfg, LazyEmbedder(cfg, PixelEmbedder()), threaded=False)
    try:
        assert indexer.refresh_paths(b(root), [b(late)]).counters.seen == 1
    finally:
        indexer.close()
    assert b(late) in store.files()


def test_a_copy_being_written_to_another_filesystem_is_never_indexed_even_by_sniffing(tmp_path):
    """Undo (or a trash on another disk) writes NAME.dedupd-partial beside its destination, in the photo tree for
    undo: its bytes are a JPEG's, so scan.sniff would index the half-written copy, by the walk or from its event."""
    from support import PixelEmbedder

    from dedupd.config import load_config
    from dedupd.ingest.indexer import Indexer
    from dedupd.model.loader import LazyEmbedder
    from dedupd.purge.execute import PARTIAL_SUFFIX
    from dedupd.store import Store

    root = tmp_path / "photos"
    partial = touch(root / os.fsdecode(b"x.jpg" + PARTIAL_SUFFIX), _jpeg_bytes())
    touch(root / "f0001", _jpeg_bytes())
    assert paths(scan([b(root)], ScanOptions(sniff=True))) == [b(root / "f0001")]
    cfg = load_config(None, {"store": str(tmp_path / "store"), "scan.sniff": True})
    indexer = Indexer(Store.open(cfg.store_path()), cfg, LazyEmbedder(cfg, PixelEmbedder()), threaded=False)
    try:
        assert indexer.refresh_paths(b(root), [b(partial)]).counters.seen == 0
    finally:
        indexer.close()
