"""Each purge safety check skips exactly the item that fails it; the rest go on; exit 1 with a summary."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import imagegen
import pytest
from support import PixelEmbedder, b, make_library, pairs, scan_library
from support import purge_lines as purge

from dedupd import commands
from dedupd.config import load_config
from dedupd.errors import UsageError
from dedupd.store import mark_own


@pytest.fixture
def scanned(tmp_path):
    return scan_library(tmp_path)


def test_purge_without_inplace_is_a_dry_run(scanned):
    lib, cfg, report = scanned
    rc, lines = purge(cfg, inplace=False)
    assert rc == 0
    assert all(os.path.exists(v) for _, v in pairs(report))
    assert any(line.startswith("would delete") for line in lines)


def test_a_trash_that_is_a_file_is_refused_naming_it(scanned, tmp_path):
    """`purge --inplace --trash FILE` (a file where the trash folder should be; the daemon's purge.trash_dir the
    same): once exit 1 with "b'FILE/.dedupd-own-folder': Not a directory", a bytes repr of dedupd's marker; now
    exit 2, one line naming FILE as not a folder, and every duplicate still in place."""
    lib, cfg, report = scanned
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UsageError) as info:
        purge(cfg, str(lib.root / "dedup_report.json"), trash=str(afile))
    assert str(info.value) == f"{afile}: not a folder: a file is in the way" and info.value.exit_code == 2
    assert all(os.path.exists(v) for _, v in pairs(report))


def test_purge_from_store_and_from_report_agree(scanned, tmp_path):
    lib, cfg, report = scanned
    rc, lines = purge(cfg, str(lib.root / "dedup_report.json"))
    assert rc == 0
    for keep, victim in pairs(report):
        assert os.path.exists(keep) and not os.path.exists(victim)
    assert "skipped 0" in lines[-1]


def test_victim_modified_after_the_plan_is_skipped(scanned):
    lib, cfg, report = scanned
    keep, victim = pairs(report)[0]
    with open(victim, "ab") as f:
        f.write(b"x")
    rc, lines = purge(cfg, str(lib.root / "dedup_report.json"))
    assert rc == 1 and os.path.exists(victim)
    assert any("skipped" in line and "changed" in line for line in lines)
    assert sum(not os.path.exists(v) for _, v in pairs(report)) == len(pairs(report)) - 1  # the rest went on


def test_victim_rewritten_with_same_size_and_mtime_is_caught_by_the_hash(scanned):
    lib, cfg, report = scanned
    _, victim = pairs(report)[0]
    st = os.stat(victim)
    data = bytearray(Path(victim).read_bytes())
    data[-3] ^= 0xFF
    with open(victim, "r+b") as f:
        f.write(data)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    rc, lines = purge(cfg, str(lib.root / "dedup_report.json"))
    assert rc == 1 and os.path.exists(victim)
    assert any("content changed" in line for line in lines)


def test_keeper_deleted_keeps_the_victim(scanned):
    lib, cfg, report = scanned
    keep, victim = pairs(report)[0]
    os.unlink(keep)
    rc, lines = purge(cfg, str(lib.root / "dedup_report.json"))
    assert rc == 1 and os.path.exists(victim)
    assert any("keeper no longer exists" in line for line in lines)


def test_keeper_truncated_keeps_the_victim(scanned):
    lib, cfg, report = scanned
    keep, victim = pairs(report)[0]
    os.truncate(keep, 10)
    rc, _ = purge(cfg, str(lib.root / "dedup_report.json"))
    assert rc == 1 and os.path.exists(victim)


def test_victim_replaced_by_symlink_is_refused(scanned):
    lib, cfg, report = scanned
    keep, victim = pairs(report)[0]
    os.unlink(victim)
    os.symlink(keep, victim)
    rc, lines = purge(cfg, str(lib.root / "dedup_report.json"))
    assert rc == 1 and os.path.islink(victim) and os.path.exists(keep)


def test_victim_outside_the_scanned_roots_is_refused(scanned, tmp_path):
    lib, cfg, report = scanned
    outside = tmp_path / "outside.jpg"
    shutil.copy2(lib.originals[0], outside)
    doctored = json.loads(json.dumps(report))
    doctored["groups"] = [{"keep": str(lib.originals[0]), "duplicates": [str(outside)]}]
    path = tmp_path / "doctored.json"
    path.write_text(json.dumps(doctored))
    rc, lines = purge(cfg, str(path))
    assert rc == 1 and outside.exists()


@pytest.mark.parametrize("bad", ["{root}/camera/../backup/img_000.jpg", "camera/img_000.jpg", "{root}/cam\0era/x.jpg"])
def test_malformed_plan_paths_are_refused(scanned, tmp_path, bad):
    lib, cfg, report = scanned
    doctored = {"groups": [{"keep": str(lib.originals[3]), "duplicates": [bad.format(root=lib.root)]}]}
    path = tmp_path / "doctored.json"
    path.write_text(json.dumps(doctored))
    rc, lines = purge(cfg, str(path))
    assert rc == 1
    assert all(p.exists() for p in lib.originals + list(lib.exact))


def test_hard_link_of_the_keeper_is_never_removed(tmp_path):
    lib = make_library(tmp_path / "photos")
    link = lib.root / "backup" / "hardlink.jpg"
    os.link(lib.originals[3], link)
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    commands.scan(
        str(lib.root), cfg, None, True, None, echo=lambda s: None, embedder=commands.LazyEmbedder(cfg, PixelEmbedder())
    )
    assert link.exists() and lib.originals[3].exists()


def test_protected_root_files_are_kept_never_removed(tmp_path):
    lib = make_library(tmp_path / "photos")
    cfg = load_config(None, {"store": str(tmp_path / "store"), "protect": [str(lib.root / "camera")]})
    commands.scan(
        str(lib.root), cfg, None, False, None, echo=lambda s: None, embedder=commands.LazyEmbedder(cfg, PixelEmbedder())
    )
    rc, _ = purge(cfg)
    assert all(p.exists() for p in lib.originals)


def test_trash_keeps_relative_path_and_never_overwrites(scanned, tmp_path):
    """A file at a victim's place in the trash (an earlier purge's: perhaps the last copy of its picture) stays; the
    victim goes beside it, as `x (dedupd 1).jpg`, where the journal records it and undo finds it."""
    lib, cfg, report = scanned
    trash = tmp_path / "trash"
    keep, victim = pairs(report)[0]
    rel = os.path.relpath(victim, lib.root)
    trash.mkdir()
    mark_own(trash)  # a trash an earlier purge made: a folder of the user's is refused as a trash outright
    (trash / rel).parent.mkdir(parents=True)
    (trash / rel).write_bytes(b"occupied")
    picture = Path(victim).read_bytes()
    rc, lines = purge(cfg, str(lib.root / "dedup_report.json"), trash=str(trash))
    beside = (trash / rel).with_name(f"{(trash / rel).stem} (dedupd 1){(trash / rel).suffix}")
    assert rc == 0 and not os.path.exists(victim) and (trash / rel).read_bytes() == b"occupied", lines
    assert beside.read_bytes() == picture, lines
    others = [v for _, v in pairs(report) if v != victim]
    assert all((trash / os.path.relpath(v, lib.root)).is_file() and not os.path.exists(v) for v in others)


def test_two_roots_with_the_same_relative_path_share_a_trash(tmp_path):
    """Two scanned roots, each with 2019/x.jpg a duplicate: the second went to the same place in the trash, was
    refused there, and stayed for every later purge (exit 1 each time). It goes beside the first now."""
    photos = tmp_path / "photos"
    for root in ("a", "b"):
        (photos / root / "2019").mkdir(parents=True)
        imagegen.photo(3 if root == "a" else 4, (160, 120)).save(photos / root / "1.jpg", quality=90)
        shutil.copy2(photos / root / "1.jpg", photos / root / "2019" / "x.jpg")
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    for root in ("a", "b"):
        embedder = commands.LazyEmbedder(cfg, PixelEmbedder())
        commands.scan(
            str(photos / root), cfg, str(tmp_path / f"{root}.json"), False, None, lambda s: None, embedder=embedder
        )
    trash = tmp_path / "trash"
    rc, lines = purge(cfg, trash=str(trash))
    assert rc == 0 and not list(photos.rglob("x.jpg")), lines
    assert sorted(p.name for p in (trash / "2019").iterdir()) == ["x (dedupd 1).jpg", "x.jpg"], lines


def test_removed_files_leave_the_store(scanned):
    from dedupd.store import Store

    lib, cfg, report = scanned
    purge(cfg)
    files = Store.open(cfg.store_path()).files()
    assert not {b(v) for _, v in pairs(report)} & set(files)
