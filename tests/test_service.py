"""The daemon in-process with the deterministic embedder: real watchdog observers, real LanceDB, tmp trees."""

from __future__ import annotations

import json
import os
import shutil
import time

import imagegen
import pytest
import support
from support import PixelEmbedder, Running, b, make_library
from swapping import rewrite
from test_never_last_copy import config as never_last_copy_config
from test_never_last_copy import copies, photo
from test_never_last_copy import scan as never_last_copy_scan
from test_never_last_copy_more import killed_aside

from dedupd import commands
from dedupd.faults import acting_at
from dedupd.ingest.indexer import roots_state
from dedupd.purge.run import purge_from_store
from dedupd.store import FileLock, Store

WAIT = 20.0


def wait_for(predicate, timeout=WAIT, what="condition"):
    return support.wait_for(predicate, timeout, what)


def dup_pairs(report):
    return {(g["keep"], d) for g in report["groups"] for d in g["duplicates"]} if report else set()


@pytest.fixture(params=["inotify", "poll"])
def mode(request):
    return request.param


def test_create_modify_move_delete_converge(tmp_path, mode):
    lib = make_library(tmp_path / "photos")
    with Running(tmp_path, [lib.root], **{"watch.mode": mode}) as d:
        assert b(lib.originals[0]) in d.paths()
        new = lib.root / "camera" / "new.jpg"
        imagegen.photo(50, (320, 240)).save(new, quality=90)
        wait_for(lambda: b(new) in d.paths(), what="a created file")
        moved = lib.root / "export" / "moved.jpg"
        os.rename(new, moved)
        wait_for(lambda: b(moved) in d.paths() and b(new) not in d.paths(), what="a moved file")
        os.rename(lib.root / "backup", lib.root / "archive")
        wait_for(
            lambda: (
                b(lib.root / "archive" / lib.originals[0].name) in d.paths()
                and not any(p.startswith(b(lib.root / "backup")) for p in d.paths())
            ),
            what="a moved directory",
        )
        os.unlink(moved)
        wait_for(lambda: b(moved) not in d.paths(), what="a deleted file")
        imagegen.photo(51, (320, 240)).save(lib.originals[3], quality=90)
        wait_for(
            lambda: (
                Store.open(d.config.store_path()).files()[b(lib.originals[3])].size == lib.originals[3].stat().st_size
            ),
            what="a modified file",
        )
    assert d.exit == 0
    assert d.embedder.images == 6 + 2  # moves and renames never re-embedded: only new.jpg and the rewrite


def test_write_then_rename_indexes_the_final_name_only(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    with Running(tmp_path, [root]) as d:
        tmp = root / "upload.part.jpg"  # an image name: it would be indexed if it settled before the rename
        imagegen.photo(1, (200, 150)).save(tmp, format="JPEG")
        os.rename(tmp, root / "final.jpg")
        seen: set[bytes] = set()

        def final_only() -> bool:
            paths = d.paths()
            seen.update(paths)
            return paths == {b(root / "final.jpg")}

        wait_for(final_only, what="the renamed file")
        assert b(tmp) not in seen


def test_copy_in_progress_is_processed_once_stable(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    src = tmp_path / "src.jpg"
    imagegen.photo(2, (640, 480)).save(src, quality=95)
    data = src.read_bytes()
    with Running(tmp_path, [root], **{"watch.settle_seconds": 1.0}) as d:
        dst = root / "copy.jpg"
        with open(dst, "wb") as f:
            for i in range(0, len(data), len(data) // 5):
                f.write(data[i : i + len(data) // 5])
                f.flush()
                time.sleep(0.3)
        wait_for(lambda: b(dst) in d.paths(), what="the copied file")
        record = Store.open(d.config.store_path()).files()[b(dst)]
        assert record.status == "ok" and record.size == len(data)
    assert d.embedder.images == 1


def test_report_kept_current_and_purge_from_another_process_absorbed(tmp_path):
    lib = make_library(tmp_path / "photos")
    with Running(tmp_path, [lib.root]) as d:
        report = wait_for(d.report, what="the first report")
        assert len(dup_pairs(report)) == 3
        copy = lib.root / "backup" / "copy3.jpg"
        shutil.copy2(lib.originals[3], copy)
        wait_for(lambda: len(dup_pairs(d.report())) == 4, what="the report to show a new copy")
        rc = commands.purge(d.config, None, True, None, echo=lambda s: None, model=PixelEmbedder.model_id)
        assert rc == 0
        wait_for(lambda: not dup_pairs(d.report()), what="the daemon to absorb the purge")


def test_with_default_report_interval_a_second_change_is_reported_within_seconds(tmp_path):
    from dedupd.config import ReportConfig

    lib = make_library(tmp_path / "photos", distinct=5)
    with Running(tmp_path, [lib.root], **{"report.min_interval": ReportConfig().min_interval}) as d:
        wait_for(lambda: d.report() and len(dup_pairs(d.report())) == 3, what="the first report")
        shutil.copy2(lib.originals[3], lib.root / "backup" / "copy3.jpg")
        wait_for(lambda: len(dup_pairs(d.report())) == 4, what="the first change in the report")
        shutil.copy2(lib.originals[4], lib.root / "backup" / "copy4.jpg")  # right after that rewrite
        start = time.monotonic()
        wait_for(lambda: len(dup_pairs(d.report())) == 5, timeout=10, what="the second change in the report")
        assert time.monotonic() - start < 10  # the old fixed 60 s interval held this one back for a minute


def test_report_gap_grows_with_the_cost_of_a_rewrite():
    from dedupd.service.daemon import report_gap

    assert report_gap(2.0, 0.05) == 2.0  # a small library: the configured interval
    assert report_gap(2.0, 3.0) == 30.0  # a rewrite taking 3 s: at most 10% of the daemon's time
    assert report_gap(0.0, 0.0) == 0.0


def test_root_swapped_for_empty_directory_removes_nothing(tmp_path):
    lib = make_library(tmp_path / "photos")
    with Running(tmp_path, [lib.root], **{"watch.rescan_interval": 0.5}) as d:
        before = d.paths()
        plan = tmp_path / "plan.json"
        commands.report(d.config, str(plan), echo=lambda s: None, model=PixelEmbedder.model_id)
        assert dup_pairs(json.loads(plan.read_bytes()))
        shutil.move(str(lib.root), str(tmp_path / "away"))
        lib.root.mkdir()
        wait_for(
            lambda: roots_state(Store.open(d.config.store_path()))[str(lib.root)]["state"] == "offline",
            what="the root to go offline",
        )
        assert d.paths() == before
        from dedupd.errors import PurgeFailures

        lines: list[str] = []
        with pytest.raises(PurgeFailures):
            commands.purge(d.config, str(plan), True, None, echo=lines.append, model=PixelEmbedder.model_id)
        assert all("online" in line for line in lines if line.startswith("skipped"))
    assert all(os.path.exists(tmp_path / "away" / os.path.relpath(p, lib.root)) for p in map(os.fsdecode, before))


def test_a_sidecar_written_beside_a_copy_reaches_the_report_and_moves_the_keeper(tmp_path):
    lib = make_library(tmp_path / "photos")
    with Running(tmp_path, [lib.root]) as d:
        wait_for(lambda: d.report() and len(dup_pairs(d.report())) == 3, what="the first report")
        copy = next(c for c, o in lib.exact.items())  # backup/img_000.jpg, the duplicate of camera/img_000.jpg
        (copy.parent / (copy.name + ".xmp")).write_text("<x:xmpmeta>rating 5</x:xmpmeta>")

        def kept_with_sidecar():
            return any(g["keep"] == str(copy) and g["keep_info"]["companions"] for g in d.report()["groups"])

        wait_for(kept_with_sidecar, what="the copy with the sidecar to become the keeper")


def test_the_daemon_settles_an_interrupted_purge_on_start_purge_auto_or_not(tmp_path):
    """A purge killed between the rename aside and the unlink (kill -9, or systemd's SIGKILL at TimeoutStopSec);
    the user then saves another picture over the copy that was kept, and runs the daemon with purge.auto off. Only
    a purge settled open entries, so the picture's last copy stayed under its hidden name, which no scan indexes and
    nothing named. The daemon now settles them on start, before its walk: the file comes back into sight, indexed."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 471)
    (hidden,) = root.rglob(".dedupd-purge-*")
    picture = hidden.read_bytes()
    rewrite(bytes(keep), bytes(photo(tmp_path / "edit.jpg", 472)))

    with Running(tmp_path, [root]) as d:
        indexed = d.paths()

    assert victim.read_bytes() == picture and not list(root.rglob(".dedupd-purge-*"))
    assert b(victim) in indexed


def test_purge_auto_stops_between_acts_when_the_daemon_is_told_to_stop(tmp_path):
    """The purge loop never looked at the daemon's stop flag: a `systemctl stop` during a long purge.auto ended in
    systemd's SIGKILL at TimeoutStopSec, mid-act. It now stops between acts (each one journaled whole)."""
    root = tmp_path / "t"
    pairs = [copies(root, 481 + n, keep=f"a/{n}.jpg", dup=f"b/{n}.jpg") for n in range(3)]
    cfg = never_last_copy_config(tmp_path)
    never_last_copy_scan(cfg, root)
    told: list[bool] = []
    model = PixelEmbedder.model_id

    with acting_at("before-done", lambda: told.append(True)):
        purge_from_store(Store.open(cfg.store_path()), cfg, model, echo=lambda s: None, stopping=lambda: bool(told))

    assert [victim.exists() for _, victim in pairs] == [False, True, True]


def test_purge_auto_acts_only_in_the_daemons_own_roots(tmp_path):
    """The store also knows a root that a command-line `dedupd scan` added (or that was dropped from the config
    while the daemon was stopped: it stays online in the store). purge.auto planned from every online root in the
    store, so it deleted files in a folder the daemon was never told to watch."""
    root = tmp_path / "t"
    keep, victim = copies(root, 495, keep="a/x.jpg", dup="b/x.jpg")
    cfg = never_last_copy_config(tmp_path)
    never_last_copy_scan(cfg, root)  # the user's own scan of t/: a root of the store, online

    with Running(tmp_path, [root / "a"], **{"purge.auto": True}) as d:
        wait_for(lambda: d.report() is not None, what="the daemon's first report (and purge)")
        time.sleep(1.0)

    assert keep.exists() and victim.exists()


def test_purge_auto_counts_no_copy_outside_the_daemons_own_roots(tmp_path):
    """A backup drive (t/drive) scanned once from the command line holds byte copies of library photos, and sorts
    first (lexi would keep it). purge.auto kept to victims in its own roots but took keepers from every root in the
    store: it deleted library/x.jpg against the drive's copy, which goes away with the drive. Its groups are made of
    its own roots' files now: library/y.jpg still goes against its library twin library/z.jpg."""
    root = tmp_path / "t"
    drive, library = root / "a-drive", root / "library"
    copies(root, 497, keep="a-drive/x.jpg", dup="library/x.jpg")
    copies(root, 498, keep="library/y.jpg", dup="library/z.jpg")
    shutil.copy2(library / "y.jpg", drive / "y.jpg")
    cfg = never_last_copy_config(tmp_path)
    for folder in (drive, library):  # the user's one-off scan of the drive: a root of the store, online
        never_last_copy_scan(cfg, folder, report=tmp_path / f"{folder.name}.json")

    purge_from_store(Store.open(cfg.store_path()), cfg, PixelEmbedder.model_id, echo=lambda s: None, roots=[b(library)])

    assert sorted(p.name for p in library.iterdir()) == ["x.jpg", "y.jpg"]
    assert sorted(p.name for p in drive.iterdir()) == ["x.jpg", "y.jpg"]


def test_an_auto_purge_cycle_that_finds_the_purge_lock_held_comes_again(tmp_path):
    """A `dedupd purge`, `--undo` or `trash empty` holds the purge lock when purge.auto's cycle comes: the cycle
    failed with an error and was not tried again until the next change in the tree, which may be days away."""
    root = tmp_path / "t"
    keep, victim = copies(root, 497)
    store = tmp_path / "store"
    store.mkdir()
    held = FileLock(store / "purge.lock", "purge").acquire()
    try:
        with Running(tmp_path, [root], **{"purge.auto": True}) as d:
            wait_for(lambda: d.report() is not None, what="the first report (its purge finds the lock held)")
            time.sleep(0.5)
            assert victim.exists()
            held.release()
            wait_for(lambda: not victim.exists(), what="the purge cycle to come again")
    finally:
        held.release()
    assert keep.exists()


def test_a_reload_applies_scan_ignore_to_the_running_indexer(tmp_path):
    """SIGHUP replaced the daemon's config, but its indexer kept the old one: a `scan.ignore` added to keep a folder
    out of the index (a desktop trash, a private folder) had no effect until a restart."""
    root = tmp_path / "t"
    photo(root / "a.jpg", 501)
    with Running(tmp_path, [root]) as d:
        conf = tmp_path / "c.yaml"
        settings = {"store": str(tmp_path / "store"), "roots": [str(root)], "scan": {"ignore": ["private*"]}}
        conf.write_text(json.dumps({**settings, "watch": {"settle_seconds": 0.3, "poll_interval": 0.2}}))
        d.service.config_path = str(conf)
        d.service.reload_requested.set()
        wait_for(lambda: not d.service.reload_requested.is_set(), what="the reload")
        photo(root / "private" / "b.jpg", 502)
        photo(root / "c.jpg", 503)
        wait_for(lambda: b(root / "c.jpg") in d.paths(), what="c.jpg to be indexed")
        time.sleep(1.0)
        indexed = d.paths()
    assert b(root / "private" / "b.jpg") not in indexed
