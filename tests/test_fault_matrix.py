"""The fault matrix of the robustness issue: every row is a test somewhere in the project.

Row -> the tests that cover it (`tests/` omitted; "here" = this file):

 1 victim modified after the plan -> skipped
     test_purge.py::test_victim_modified_after_the_plan_is_skipped
     test_purge.py::test_victim_rewritten_with_same_size_and_mtime_is_caught_by_the_hash
 2 keeper deleted -> victim kept
     test_purge.py::test_keeper_deleted_keeps_the_victim
 3 keeper truncated -> victim kept
     test_purge.py::test_keeper_truncated_keeps_the_victim
 4 victim is a hard link of the keeper -> refused
     test_purge.py::test_hard_link_of_the_keeper_is_never_removed
     test_groups.py::test_hard_link_of_keeper_is_not_a_duplicate
     here: test_row4_hard_link_of_the_keeper_named_as_victim_is_refused
 5 a root listed twice, or reached again through a symlinked directory -> each inode indexed once
     test_walk.py::test_root_listed_twice_or_nested_indexes_each_inode_once
     test_walk.py::test_directory_symlinks_not_followed_by_default_and_loops_end
     here: test_row5_row6_symlinked_directory_and_loop_index_each_inode_once
     here: test_row5_daemon_with_a_root_listed_twice_and_through_a_symlink
 6 a symlink loop -> the scan ends
     test_walk.py::test_directory_symlinks_not_followed_by_default_and_loops_end
     here: test_row5_row6_symlinked_directory_and_loop_index_each_inode_once
 7 plan entries with '..', outside absolute paths, NUL bytes, symlinked parents -> refused, outside files intact
     test_purge.py::test_malformed_plan_paths_are_refused ('..', relative, NUL)
     test_purge.py::test_victim_outside_the_scanned_roots_is_refused
     test_purge.py::test_victim_replaced_by_symlink_is_refused
     here: test_row7_victim_reached_through_a_symlinked_parent_is_refused
 8 a file swapped between check and action -> refused or undone
     here: test_row8_file_swapped_between_check_and_act_is_put_back[delete|trash]
 9 kill -9 at each purge step -> consistent and resumable
     test_purge_journal.py::test_kill_9_during_delete_then_rerun_finishes_without_acting_twice
     test_purge_journal.py::test_kill_9_during_trash_then_rerun
10 kill -9 during an embed batch -> the store opens at its last commit, no duplicate rows
     test_daemon_process.py::test_kill_9_during_bulk_embed_then_restart_gives_the_same_store (`dedupd run`)
     here: test_row10_kill_9_inside_an_embed_batch_of_a_scan
11 a corrupt or zero-byte newest store version, a torn journal line -> recovers or refuses clearly; old data kept
     test_purge_journal.py::test_a_torn_journal_line_is_ignored_and_recovery_goes_on
     here: test_row11_damaged_newest_version_reopens_at_the_last_good_commit[*]
     here: test_row11_unrecoverable_table_is_refused_with_one_line_and_left_as_it_was
12 a root replaced by an empty directory -> no deletions, purge refused
     test_service.py::test_root_swapped_for_empty_directory_removes_nothing
13 more than the configured fraction of files vanish at once -> circuit breaker, nothing dropped
     here: test_row13_reconcile_breaker_trips_on_mass_vanish_and_not_on_a_small_loss
     here: test_row13_daemon_mass_vanish_drops_nothing_and_recovers_when_files_return
14 dropped watcher events -> the next reconcile heals them
     test_watcher.py::test_inotify_queue_overflow_marks_root, test_watcher.py::test_overflowed_pops_roots
     here: test_row14_changes_the_watcher_never_reported_are_healed_by_the_periodic_reconcile
15 inotify watch limit hit, or a watcher thread dies -> polling fallback, status says degraded
     test_watcher.py::test_enospc_at_add_root_falls_back_to_polling
     test_watcher.py::test_watch_limit_used_up_by_the_tree_falls_back
     test_watcher.py::test_watch_limit_reached_later_switches_to_polling
     test_watcher.py::test_dead_observer_is_replaced_by_polling
     here: test_row15_daemon_whose_watcher_thread_dies_polls_and_status_says_degraded
16 an NFS/CIFS/FUSE root -> polling chosen
     test_watcher.py::test_choose_backend_auto, test_watcher.py::test_mount_fstype_longest_prefix
17 write-to-temp-then-rename -> the final name indexed once, the temp never
     test_service.py::test_write_then_rename_indexes_the_final_name_only
     test_watcher.py::test_inotify_temp_then_rename_and_moves
     here: test_row17_temp_with_an_image_extension_renamed_at_once_is_never_indexed
18 a copy in progress -> processed only once stable
     test_service.py::test_copy_in_progress_is_processed_once_stable
     test_watcher.py::test_settled_waits_for_a_growing_file
19 a file or directory moved -> no re-embedding
     test_service.py::test_create_modify_move_delete_converge[inotify|poll]
     test_scan.py::test_exact_copies_moves_and_renames_are_never_embedded_again
20 NAS metadata folders -> never indexed, never removed
     test_walk.py::test_nas_metadata_never_indexed
     test_watcher.py::test_inotify_ignores_nas_folders, ::test_polling_ignores_nas_folders_and_keeps_bytes
     here: test_row20_nas_metadata_copies_are_never_indexed_nor_removed
21 decompression bombs -> unreadable, the daemon stays up, memory stays bounded
     test_decode.py::test_png_bomb_header_is_rejected_fast, ::test_png_bomb_header_is_rejected_in_bounded_memory
     test_decode.py::test_gif_with_huge_first_frame_is_a_bomb
     test_decode.py::test_gif_with_huge_second_frame_decodes_first_frame_in_bounded_memory
     test_decode.py::test_max_pixels_is_checked_before_decoding
     here: test_row21_daemon_stays_up_with_bombs_dropped_in
     here: test_row21_scan_over_bombs_stays_in_bounded_memory
22 truncated, zero-byte, wrong-extension, AppleDouble, random-bytes files -> the right status, never a keeper
     test_decode.py::test_empty_file, ::test_truncated_file, ::test_not_an_image, ::test_appledouble_sidecar,
     test_decode.py::test_wrong_extension_still_decodes
     test_groups.py::test_unreadable_files_are_never_keepers_or_duplicates
     test_scan.py::test_unreadable_file_recorded_never_grouped_retried_only_when_changed
     here: test_row22_bad_files_get_their_status_and_are_never_keepers
     here: test_row22_an_io_error_on_one_copy_does_not_mark_its_readable_twin_unreadable
23 CMYK, 16-bit grey, palette+transparency, EXIF 6, 100-frame GIF/WebP, HEIC -> decoded; a rotated twin groups
     test_decode.py::test_exif_orientation_is_applied, ::test_orientation_6_swaps_reported_size_and_rotates_clockwise,
     test_decode.py::test_cmyk_jpeg_colours_are_right, ::test_16bit_grey_png_is_scaled_not_clipped,
     test_decode.py::test_palette_transparency_composited_on_white, ::test_animation_yields_first_frame,
     test_decode.py::test_heic, ::test_heic_orientation_is_applied_once
     here: test_row23_format_and_orientation_twins_group_with_their_originals
24 non-UTF-8 names, NFC vs NFD -> distinct files, valid JSON, purge hits the right file
     test_walk.py::test_non_utf8_and_nfc_nfd_names_are_distinct
     test_report.py::test_non_utf8_paths_are_valid_utf8_json_and_round_trip
     test_report.py::test_purge_hits_the_right_non_utf8_file
     test_watcher.py::test_inotify_non_utf8_names_exact_bytes
     here: test_row24_nfc_and_nfd_twins_are_distinct_and_purge_hits_the_named_one
25 a file vanishing or unreadable mid-scan -> the scan goes on
     test_walk.py::test_unreadable_directory_reported_and_scan_goes_on
     here: test_row25_file_vanished_or_turned_fifo_between_walk_and_hash
     here: test_row25_file_turned_fifo_between_hash_and_decode
26 the CLI reading while the daemon writes -> a consistent view
     test_daemon_process.py::test_notify_signals_lock_and_readers (one report and one status beside `dedupd run`)
     here: test_row26_cli_report_and_status_while_the_daemon_writes
27 SIGTERM mid-batch -> exit 0 and a clean resume
     test_daemon_process.py::test_sigterm_mid_batch_exits_0_and_resumes_cleanly
28 the systemd unit -> systemd-analyze verify clean and security exposure <= 2.0
     test_systemd_unit.py::test_verify_unit_as_shipped, ::test_verify_installable_copy_is_clean,
     test_systemd_unit.py::test_verify_with_readme_dropin, ::test_security_exposure_is_low,
     test_systemd_unit.py::test_security_exposure_with_gpu_dropin_is_low

Permission errors are simulated, never made with chmod (CI runs as root): paths that vanish, FIFOs swapped in, and
seams we own (a Journal subclass, a ContentBook subclass, an embedder that kills its own process).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import imagegen
import numpy as np
import pytest
from PIL import Image
from support import PixelEmbedder, Running, b, make_library, pairs, purge_lines
from test_service import wait_for

from dedupd import commands
from dedupd.config import load_config
from dedupd.dedup.groups import Rules
from dedupd.ingest import pipeline
from dedupd.ingest.hashing import content_hash
from dedupd.ingest.indexer import Indexer, roots_state
from dedupd.ingest.walk import scan as walk
from dedupd.model.loader import LazyEmbedder
from dedupd.output.report import entry_path
from dedupd.paths import normalise_root
from dedupd.purge.evidence import Evidence
from dedupd.purge.execute import PurgeContext, PurgeItem, run_purge
from dedupd.purge.journal import Journal, latest_states, unfinished
from dedupd.store import FileRecord, Store, StoreError

TESTS = Path(__file__).resolve().parent
MODEL = PixelEmbedder.model_id
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


# --- helpers ---------------------------------------------------------------------------------------------------------


def config(tmp_path, **overrides):
    return load_config(None, {"store": str(tmp_path / "store"), **overrides})


def scan(cfg, root, inplace=False, threaded=False, embedder=None):
    lines: list[str] = []
    rc = commands.scan(
        str(root),
        cfg,
        None,
        inplace,
        None,
        echo=lines.append,
        threaded=threaded,
        embedder=LazyEmbedder(cfg, embedder or PixelEmbedder()),
    )
    return rc, json.loads((Path(root) / "dedup_report.json").read_bytes()), lines


def purge(cfg, report, tmp_path, trash=None):
    """Purge --inplace from a plan (a report dict); (exit code, output lines)."""
    plan = tmp_path / f"plan-{time.monotonic_ns()}.json"
    plan.write_text(json.dumps(report))
    return purge_lines(cfg, str(plan), True, trash)


def members(group) -> set[bytes]:
    return {entry_path(group["keep_info"]), *(entry_path(d) for d in group["duplicate_details"])}


def record_of(path: Path, root: Path) -> FileRecord:
    st = os.stat(path)
    return FileRecord(
        b(path), b(root), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, content_hash(path), status="ok"
    )


def run_with_deadline(fn, fifo: Path | None = None, timeout: float = 60.0):
    """fn() on a thread; a thread still blocked after `timeout` fails the test (a FIFO it hangs on is unblocked)."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if fifo is not None:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # a reader is blocked in open(): this lets it go
            os.close(fd)
            thread.join(10)
        pytest.fail(f"blocked for more than {timeout}s (on a FIFO?)")
    return out.get("value")


def make_fifo(path: Path) -> None:
    os.unlink(path)
    os.mkfifo(path)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie nobody reaps is gone for our purpose


def watch_tree(child: subprocess.Popen, timeout: float) -> set[int]:
    """Wait for `child` to end; every pid seen in its process tree meanwhile."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()
            child.wait(30)
            pytest.fail(f"the child ran for more than {timeout}s")
        seen.update(_process_tree(child.pid))
        time.sleep(0.05)
    return seen


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return pids
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids += _process_tree(int(child))
    return pids


def _peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of one process in bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@pytest.fixture
def scanned(tmp_path):
    lib = make_library(tmp_path / "photos")
    cfg = config(tmp_path)
    rc, report, _ = scan(cfg, lib.root)
    assert rc == 0
    return lib, cfg, report


# --- row 4 -----------------------------------------------------------------------------------------------------------


def test_row4_hard_link_of_the_keeper_named_as_victim_is_refused(scanned, tmp_path):
    lib, cfg, report = scanned
    # Straight at the check: both names indexed (as an older store or another scanner could have them).
    root = tmp_path / "links"
    root.mkdir()
    keeper, link = root / "a.jpg", root / "b.jpg"
    imagegen.photo(1, (64, 48)).save(keeper)
    os.link(keeper, link)
    records = {b(p): record_of(p, root) for p in (keeper, link)}
    ctx = PurgeContext(records, [b(root)], Evidence("m", 0.9, frozenset()), Rules(), dry_run=False)
    (outcome,) = run_purge([PurgeItem(b(link), b(keeper))], ctx).outcomes
    assert outcome.action == "skipped" and "hard link" in outcome.reason
    assert link.exists() and keeper.exists()
    # Through purge: the planned victim became a hard link of its keeper after the scan.
    keep, victim = next((k, v) for k, v in pairs(report) if Path(v).read_bytes() == Path(k).read_bytes())
    os.unlink(victim)
    os.link(keep, victim)
    rc, lines = purge(cfg, report, tmp_path)
    assert rc == 1 and os.path.exists(victim) and os.path.exists(keep)
    assert os.stat(victim).st_ino == os.stat(keep).st_ino


# --- rows 5 and 6 -----------------------------------------------------------------------------------------------------


def test_row5_row6_symlinked_directory_and_loop_index_each_inode_once(tmp_path):
    root = tmp_path / "photos"
    (root / "real").mkdir(parents=True)
    for i in range(3):
        imagegen.photo(i, (96, 72)).save(root / "real" / f"{i}.jpg", quality=90)
    os.symlink(root / "real", root / "again")  # the same folder a second time
    os.symlink(root, root / "real" / "loop")  # and a loop back to the top
    cfg = config(tmp_path, **{"scan.follow_symlinks": True})
    rc, report, lines = run_with_deadline(lambda: scan(cfg, root), timeout=120)
    assert rc == 0
    files = Store.open(cfg.store_path()).files()
    assert len(files) == 3 and len({(f.device, f.inode) for f in files.values()}) == 3
    assert report["groups"] == []  # a file reached twice is not its own duplicate
    assert all((root / "real" / f"{i}.jpg").exists() for i in range(3))


def test_row5_a_root_listed_twice_or_through_a_symlink_is_refused_naming_the_key(tmp_path):
    """Issue 11: a root listed twice (three watchers on one tree) is refused before the daemon starts, not tolerated."""
    from dedupd.errors import ConfigError

    root = tmp_path / "photos"
    root.mkdir()
    os.symlink(root, tmp_path / "alias")
    for roots in ([root, root], [root, tmp_path / "alias"]):
        with pytest.raises(ConfigError) as caught:
            load_config(None, {"store": str(tmp_path / "store"), "roots": [str(r) for r in roots]})
        assert "roots" in str(caught.value) and "\n" not in str(caught.value)


# --- row 7 -----------------------------------------------------------------------------------------------------------


def test_row7_victim_reached_through_a_symlinked_parent_is_refused(scanned, tmp_path):
    """The folder of a planned victim is moved out of the root and a symlink to it put in its place: the path, the
    inode and the bytes all still match the store, and only the symlinked parent tells the file is outside now."""
    lib, cfg, report = scanned
    folder = Path(pairs(report)[0][1]).parent
    victims = [v for _, v in pairs(report) if Path(v).parent == folder]
    outside = tmp_path / "outside"
    os.rename(folder, outside)
    os.symlink(outside, folder)
    rc, lines = purge(cfg, report, tmp_path)
    assert rc == 1
    assert any("symlink" in line for line in lines if line.startswith("skipped"))
    for victim in victims:
        assert (outside / os.path.basename(victim)).is_file()


# --- row 8 -----------------------------------------------------------------------------------------------------------


class SwappingJournal(Journal):
    """Once the intent is on disk (every check has passed, nothing acted yet), the victim is swapped for another file:
    the original renamed to <victim>.original, a new inode written at the victim's path."""

    SWAPPED_IN = b"another file, swapped in after the checks"

    def __init__(self, path: Path, victim: bytes):
        super().__init__(path)
        self.victim = victim

    def intent(self, *args, **kwargs):
        entry = super().intent(*args, **kwargs)
        os.rename(self.victim, self.victim + b".original")
        with open(self.victim, "wb") as f:
            f.write(self.SWAPPED_IN)
        return entry


@pytest.mark.parametrize("action", ["delete", "trash"])
def test_row8_file_swapped_between_check_and_act_is_put_back(scanned, tmp_path, action):
    lib, cfg, report = scanned
    keep, victim = pairs(report)[0]
    original = Path(victim).read_bytes()
    store = Store.open(cfg.store_path())
    (store.path / "journal").mkdir(exist_ok=True)
    journal = SwappingJournal(store.path / "journal" / "purge-swap.jsonl", os.fsencode(victim))
    trash = tmp_path / "trash"
    ctx = PurgeContext(
        records=store.files(),
        roots=[b(lib.root)],
        evidence=Evidence.load(store, PixelEmbedder.model_id, cfg.dedup.threshold),
        rules=Rules(),
        dry_run=False,
        journal=journal,
        trash_dir=b(trash) if action == "trash" else None,
    )
    try:
        (outcome,) = run_purge([PurgeItem(os.fsencode(victim), os.fsencode(keep))], ctx).outcomes
    finally:
        journal.close()
    assert outcome.action == "skipped" and "swapped" in outcome.reason and "put back" in outcome.reason
    assert Path(victim).read_bytes() == SwappingJournal.SWAPPED_IN  # the swapped-in file is where it was
    assert Path(victim + ".original").read_bytes() == original and Path(keep).exists()
    assert not [p for p in os.listdir(os.path.dirname(victim)) if p.startswith(".dedupd-purge-")]
    assert not trash.exists() or not [p for p in trash.rglob("*") if p.is_file()]
    assert not unfinished(journal.path)
    ((_, last),) = latest_states(journal.path).values()
    assert last.state == "skipped"


# --- row 10 ----------------------------------------------------------------------------------------------------------

DIES_MID_BATCH = r"""
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from support import PixelEmbedder
from dedupd import commands
from dedupd.config import load_config

class DiesMidBatch(PixelEmbedder):
    def embed(self, images):
        if self.calls == 3:        # the 4th batch: three batches went through before it
            time.sleep(1.0)        # let the commit stage write what it has
            os.kill(os.getpid(), signal.SIGKILL)
        return super().embed(images)

cfg = load_config(None, {"store": sys.argv[3], "model.batch_size": 2, "scan.commit_every": 2})
commands.scan(sys.argv[2], cfg, None, False, None, embedder=commands.LazyEmbedder(cfg, DiesMidBatch()))
"""


def test_row10_kill_9_inside_an_embed_batch_of_a_scan(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(12):
        imagegen.photo(i, (96, 72)).save(root / f"p{i:02d}.jpg", quality=90)
    shutil.copy2(root / "p00.jpg", root / "z_copy0.jpg")
    shutil.copy2(root / "p05.jpg", root / "z_copy5.jpg")
    cfg = config(tmp_path)
    with open(tmp_path / "child.log", "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", DIES_MID_BATCH, str(TESTS), str(root), str(cfg.store_path())],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        tree = watch_tree(child, timeout=180)
    assert child.returncode == -signal.SIGKILL, (tmp_path / "child.log").read_text()
    helpers = tree - {child.pid}  # decode workers, forkserver, resource tracker
    assert helpers, "the scan was expected to decode in worker processes"
    wait_for(lambda: not any(map(alive, helpers)), timeout=30, what="the killed scan's helper processes to end")
    store = Store.open(cfg.store_path())  # opens at its last commit
    contents, _ = store.vectors(MODEL)
    assert 0 < len(contents) < 12, "killed too early or too late to test a resume"
    assert store.row_counts()["vectors"] == len(contents) == len(set(contents))  # one row per (content, model)
    files = store.files()
    assert store.row_counts()["files"] == len(files)
    assert {f.content for f in files.values() if f.status == "ok"} <= set(contents)  # no row without its vector
    done_before = len(contents)

    embedder = PixelEmbedder()
    rc, report, _ = scan(cfg, root, embedder=embedder)
    assert rc == 0
    store = Store.open(cfg.store_path())
    contents, _ = store.vectors(MODEL)
    assert len(contents) == len(set(contents)) == 12 == store.row_counts()["vectors"]
    assert embedder.images == 12 - done_before  # what was committed is never embedded again
    files = store.files()
    assert len(files) == 14 and all(f.status == "ok" for f in files.values())
    assert {(k, d) for k, d in pairs(report)} == {
        (str(root / "p00.jpg"), str(root / "z_copy0.jpg")),
        (str(root / "p05.jpg"), str(root / "z_copy5.jpg")),
    }


# --- row 11 ----------------------------------------------------------------------------------------------------------


def manifests(store_path: Path, table: str) -> list[Path]:
    """A Lance table's manifests, newest first (v2 names are 2**64 - 1 - version, zero-padded to 20 digits)."""
    found = list((store_path / f"{table}.lance" / "_versions").glob("*.manifest"))
    version = lambda p: (2**64 - 1) - int(p.stem) if len(p.stem) == 20 else int(p.stem)  # noqa: E731
    return sorted(found, key=version, reverse=True)


def damage(path: Path, how: str) -> None:
    if how == "zero-byte":
        path.write_bytes(b"")
    else:
        path.write_bytes(np.random.default_rng(11).integers(0, 256, 300, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("how", ["zero-byte", "garbage"])
@pytest.mark.parametrize("table", ["files", "vectors"])
def test_row11_damaged_newest_version_reopens_at_the_last_good_commit(tmp_path, caplog, table, how):
    lib = make_library(tmp_path / "photos")
    cfg = config(tmp_path)
    scan(cfg, lib.root)
    first = Store.open(cfg.store_path())
    old_files = {p: (f.content, f.status) for p, f in first.files().items()}
    old_vectors = set(first.vectors(MODEL)[0])
    new = lib.root / "camera" / "late.jpg"
    imagegen.photo(40, (320, 240)).save(new, quality=90)
    scan(cfg, lib.root)
    newest = manifests(cfg.store_path(), table)[0]
    damage(newest, how)
    damaged = newest.read_bytes()

    with caplog.at_level("WARNING", logger="dedupd"):
        store = Store.open(cfg.store_path())
    assert any("unreadable" in r.getMessage() and table in r.getMessage() for r in caplog.records)
    files = store.files()
    assert {p: (f.content, f.status) for p, f in files.items() if p in old_files} == old_files  # nothing older lost
    assert old_vectors <= set(store.vectors(MODEL)[0])
    (kept,) = (cfg.store_path() / "damaged").iterdir()  # the damaged manifest is set aside, not deleted
    assert kept.read_bytes() == damaged

    rc, report, _ = scan(cfg, lib.root)  # and the store goes on from there
    assert rc == 0
    store = Store.open(cfg.store_path())
    assert store.files()[b(new)].status == "ok"
    contents = store.vectors(MODEL)[0]
    assert len(contents) == len(set(contents)) == 7


def test_row11_unrecoverable_table_is_refused_with_one_line_and_left_as_it_was(tmp_path):
    lib = make_library(tmp_path / "photos")
    cfg = config(tmp_path)
    scan(cfg, lib.root)
    imagegen.photo(40, (320, 240)).save(lib.root / "camera" / "late.jpg", quality=90)
    scan(cfg, lib.root)
    two = manifests(cfg.store_path(), "files")[:2]
    for path in two:
        damage(path, "zero-byte")  # the newest and the one before: there is no good commit to fall back to
    listing = sorted(p.relative_to(cfg.store_path()) for p in cfg.store_path().rglob("*"))
    with pytest.raises(StoreError, match="table files is damaged"):
        Store.open(cfg.store_path())
    out = subprocess.run(
        [sys.executable, "-m", "dedupd", "status", "--store", str(cfg.store_path()), "--model", MODEL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged" in lines[0] and str(cfg.store_path()) in lines[0], out.stderr
    after = sorted(p.relative_to(cfg.store_path()) for p in cfg.store_path().rglob("*"))
    assert after == listing  # nothing moved, nothing deleted
    assert all(p.exists() for p in two)


# --- row 13 ----------------------------------------------------------------------------------------------------------


def test_row13_reconcile_breaker_trips_on_mass_vanish_and_not_on_a_small_loss(tmp_path):
    lib = make_library(tmp_path / "photos")  # 8 files, 5 of them in camera/
    cfg = config(tmp_path, **{"watch.max_vanish_fraction": 0.5})
    store = Store.open(cfg.store_path())
    embedder = PixelEmbedder()
    indexer = Indexer(store, cfg, LazyEmbedder(cfg, embedder), threaded=False)
    root = normalise_root(lib.root)
    indexer.reconcile(root)
    before = set(store.files())
    os.rename(lib.root / "camera", tmp_path / "camera-away")  # 5 of 8 at once
    result = indexer.reconcile(root)
    assert "vanished" in result.offline and result.removed == 0
    assert set(store.files()) == before
    assert roots_state(store)[str(lib.root)]["state"] == "offline"
    rc = commands.purge(cfg, None, True, None, echo=lambda s: None, model=MODEL)  # an offline root is never planned
    assert rc == 0 and all(os.path.exists(p) for p in map(os.fsdecode, before) if "/camera/" not in p)

    os.rename(tmp_path / "camera-away", lib.root / "camera")
    assert not indexer.reconcile(root).offline
    assert roots_state(store)[str(lib.root)]["state"] == "online"
    os.unlink(lib.root / "export" / "c.png")  # 1 of 8: an ordinary deletion
    result = indexer.reconcile(root)
    assert not result.offline and result.removed == 1
    assert set(store.files()) == before - {b(lib.root / "export" / "c.png")}
    assert embedder.images == 6  # nothing re-embedded when the files came back


def test_row13_daemon_mass_vanish_drops_nothing_and_recovers_when_files_return(tmp_path):
    lib = make_library(tmp_path / "photos")

    def state(d):
        return roots_state(Store.open(d.config.store_path()))[str(lib.root)]["state"]

    with Running(tmp_path, [lib.root]) as d:
        before = d.paths()
        assert len(before) == 8
        os.rename(lib.root / "camera", tmp_path / "camera-away")  # one event, 5 of 8 files gone
        wait_for(lambda: state(d) == "offline", what="the breaker to take the root offline")
        assert d.paths() == before
        os.rename(tmp_path / "camera-away", lib.root / "camera")
        wait_for(lambda: state(d) == "online", what="the root to come back")
        gone = lib.root / "export" / "c.png"
        os.unlink(gone)
        wait_for(lambda: d.paths() == before - {b(gone)}, what="an ordinary deletion to be dropped")
    assert d.exit == 0
    assert d.embedder.images == 6


# --- row 14 ----------------------------------------------------------------------------------------------------------


def test_row14_changes_the_watcher_never_reported_are_healed_by_the_periodic_reconcile(tmp_path):
    """Polling once an hour stands in for a watcher that lost its events: only the reconcile can notice."""
    lib = make_library(tmp_path / "photos")
    overrides = {"watch.mode": "poll", "watch.poll_interval": 3600.0, "watch.rescan_interval": 1.0}
    with Running(tmp_path, [lib.root], **overrides) as d:
        new = lib.root / "camera" / "new.jpg"
        imagegen.photo(60, (320, 240)).save(new, quality=90)
        gone = lib.root / "export" / "small_b.jpg"
        os.unlink(gone)
        changed = lib.originals[3]
        imagegen.photo(61, (320, 240)).save(changed, quality=90)
        assert d.service.dirty.pending() == []  # no event was delivered for any of it

        def healed():
            files = Store.open(d.config.store_path()).files()
            return b(new) in files and b(gone) not in files and files[b(changed)].content == content_hash(changed)

        wait_for(healed, what="the reconcile to heal the missed changes")
    assert d.embedder.images == 6 + 2


# --- row 15 ----------------------------------------------------------------------------------------------------------


def test_row15_daemon_whose_watcher_thread_dies_polls_and_status_says_degraded(tmp_path):
    from watchdog.observers.api import BaseObserver

    root = tmp_path / "photos"
    root.mkdir()
    imagegen.photo(1, (96, 72)).save(root / "a.jpg", quality=90)
    with Running(tmp_path, [root], **{"watch.mode": "inotify"}) as d:
        observers = [
            t
            for t in threading.enumerate()
            if isinstance(t, BaseObserver) and any(e.watch.path == str(root) for e in t.emitters)
        ]
        assert len(observers) == 1
        observers[0].stop()  # the watcher thread ends, as a crashed one would
        status_file = d.config.store_path() / "daemon-status.json"

        def degraded():
            data = json.loads(status_file.read_text())
            return data["health"].get(str(root), "").startswith("degraded") and data

        data = wait_for(degraded, what="the status to say degraded")
        assert data["watchers"][str(root)].startswith("poll")
        lines: list[str] = []
        commands.status(d.config, echo=lines.append, model=MODEL)
        (line,) = [line for line in lines if line.strip().startswith(f"watcher {root}")]
        assert ": poll (" in line and "degraded" in line
        new = root / "after.jpg"
        imagegen.photo(2, (96, 72)).save(new, quality=90)
        wait_for(lambda: b(new) in d.paths(), what="polling to pick up a new file")
    assert d.exit == 0


# --- row 17 ----------------------------------------------------------------------------------------------------------


def test_row17_temp_with_an_image_extension_renamed_at_once_is_never_indexed(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    seen: set[bytes] = set()
    with Running(tmp_path, [root], **{"watch.settle_seconds": 0.5}) as d:
        temp, final = root / "~upload-4711.jpg", root / "IMG_0001.jpg"
        imagegen.photo(1, (200, 150)).save(temp, format="JPEG")
        os.rename(temp, final)

        def settled():
            paths = d.paths()
            seen.update(paths)
            return paths == {b(final)} and not len(d.service.dirty)

        wait_for(settled, what="the final name")
        time.sleep(1.0)
        seen.update(d.paths())
    assert seen == {b(final)}
    assert d.embedder.images == 1


# --- row 20 ----------------------------------------------------------------------------------------------------------

NAS_PLACES = (
    "@eaDir/img_000.jpg/SYNOPHOTO_THUMB_XL.jpg",
    "#recycle/img_000.jpg",
    "#snapshot/daily/img_000.jpg",
    ".@__thumb/img_000.jpg",
    ".Trash-1000/files/img_000.jpg",
    "camera/._img_000.jpg",
)


def test_row20_nas_metadata_copies_are_never_indexed_nor_removed(tmp_path):
    lib = make_library(tmp_path / "photos")
    original = lib.originals[0]
    data = original.read_bytes()
    nas = [lib.root / place for place in NAS_PLACES]
    for path in nas:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(original, path)  # exact copies: they would be duplicates if they were ever looked at
    cfg = config(tmp_path)
    rc, report, _ = scan(cfg, lib.root, inplace=True)
    assert rc == 0 and all(path.read_bytes() == data for path in nas)
    assert not {str(p) for p in nas} & {p for pair in pairs(report) for p in pair}
    keeper = next(k for k, _ in pairs(report) if Path(k).read_bytes() == data)  # the copy the purge kept
    store = Store.open(cfg.store_path())
    assert not {b(p) for p in nas} & set(store.files())
    # A plan naming them anyway is refused, and the daemon's event path ignores them too.
    plan = {"groups": [{"keep": keeper, "duplicates": [str(p) for p in nas]}]}
    rc, lines = purge(cfg, plan, tmp_path)
    assert rc == 1 and all(p.exists() for p in nas)
    indexer = Indexer(store, cfg, LazyEmbedder(cfg, PixelEmbedder()), threaded=False)
    result = indexer.refresh_paths(b(lib.root), [b(p) for p in nas] + [b(lib.root / "#recycle")])
    assert result.counters.seen == 0 and not {b(p) for p in nas} & set(store.files())


# --- row 21 ----------------------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_deflate_bomb(path: Path, side: int) -> None:
    """A real PNG bomb: side x side RGB of zeros, a few hundred KB on disk, ~3 * side**2 bytes once decoded."""
    packer = zlib.compressobj(6)
    row = b"\x00" * (1 + 3 * side)
    idat = b"".join([packer.compress(row * 50) for _ in range(side // 50)] + [packer.flush()])
    ihdr = struct.pack(">IIBBBBB", side, side // 50 * 50, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )


def plant_bombs(root: Path) -> dict[str, Path]:
    bombs = {"header": root / "bomb.png", "gif0": root / "huge-first-frame.gif", "gif1": root / "huge-second-frame.gif"}
    imagegen.write_png_bomb_header(bombs["header"], 60000, 60000)
    imagegen.write_gif_with_huge_frame(bombs["gif0"], frame=0)
    imagegen.write_gif_with_huge_frame(bombs["gif1"], frame=1)
    return bombs


def assert_bombs_defused(files: dict[bytes, FileRecord], bombs: dict[str, Path]) -> None:
    for name in ("header", "gif0"):
        record = files[b(bombs[name])]
        assert record.status == "unreadable" and record.error.startswith("decompression bomb"), record
    # Frame 0 of this GIF is an honest 32x32 picture, decoded as such (test_decode pins that contract); the bomb in
    # frame 1 is never decoded. Either outcome keeps memory bounded; decoding the bomb's size never happens.
    gif1 = files[b(bombs["gif1"])]
    assert (gif1.status, gif1.width, gif1.height) == ("ok", 32, 32) or gif1.error.startswith("decompression bomb")


def test_row21_daemon_stays_up_with_bombs_dropped_in(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    with Running(tmp_path, [root]) as d:
        bombs = plant_bombs(root)
        normal = root / "normal.jpg"
        imagegen.photo(3, (160, 120)).save(normal, quality=90)
        wait_for(lambda: d.paths() == {b(normal), *map(b, bombs.values())}, what="all files indexed")
        files = Store.open(d.config.store_path()).files()
        assert files[b(normal)].status == "ok"
        assert_bombs_defused(files, bombs)
        later = root / "later.jpg"
        imagegen.photo(4, (160, 120)).save(later, quality=90)
        wait_for(lambda: b(later) in d.paths(), what="the daemon to go on after the bombs")
        assert d.thread.is_alive() and d.service.health.phase == "watching"
        assert d.service.health.errors == []
    assert d.exit == 0


SCAN_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from support import PixelEmbedder
from dedupd import commands
from dedupd.config import load_config
cfg = load_config(None, {"store": sys.argv[3], "scan.max_pixels": 20_000_000, "scan.decode_workers": 1})
sys.exit(commands.scan(sys.argv[2], cfg, None, False, None, embedder=commands.LazyEmbedder(cfg, PixelEmbedder())))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to follow the process tree")
def test_row21_scan_over_bombs_stays_in_bounded_memory(tmp_path):
    """The whole process tree (scan, forkserver, decode workers) stays under 1 GiB. A 13000x13000 deflate bomb is
    under Pillow's own limit but over scan.max_pixels: decoded, it would take ~3.5 GB across the tree."""
    root = tmp_path / "photos"
    root.mkdir()
    bombs = plant_bombs(root)
    deflate = root / "deflate-bomb.png"
    write_deflate_bomb(deflate, 13000)
    assert deflate.stat().st_size < 2_000_000
    for i in range(3):
        imagegen.photo(i, (320, 240)).save(root / f"{i}.jpg", quality=90)
    store = tmp_path / "store"
    with open(tmp_path / "child.log", "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", SCAN_CHILD, str(TESTS), str(root), str(store)], stdout=log, stderr=subprocess.STDOUT
        )
        peak = 0
        deadline = time.monotonic() + 180
        while child.poll() is None and time.monotonic() < deadline:
            peak = max(peak, sum(_peak_rss(pid) for pid in _process_tree(child.pid)))
            time.sleep(0.02)
        if child.poll() is None:
            child.kill()
        child.wait(30)
    assert child.returncode == 0, (tmp_path / "child.log").read_text()
    assert 0 < peak < 1 << 30, f"process tree peaked at {peak >> 20} MiB"
    files = Store.open(store).files()
    assert_bombs_defused(files, bombs)
    assert files[b(deflate)].error.startswith("decompression bomb")
    assert all(files[b(root / f"{i}.jpg")].status == "ok" for i in range(3))


# --- row 22 ----------------------------------------------------------------------------------------------------------


def test_row22_bad_files_get_their_status_and_are_never_keepers(tmp_path):
    """Every bad file's name sorts before the good ones, so the lexi policy would pick it if it could."""
    root = tmp_path / "photos"
    root.mkdir()
    good = root / "photo.jpg"
    imagegen.photo(5, (320, 240)).save(good, quality=90)
    shutil.copy2(good, root / "photo_copy.jpg")
    imagegen.write_truncated(good, root / "0_truncated.jpg", 0.5)
    (root / "0_zero.jpg").write_bytes(b"")
    imagegen.random_bytes(root / "0_random.jpg")
    imagegen.photo(5, (320, 240)).save(root / "0_really_a_png.jpg", "PNG")  # wrong extension: a fine image
    imagegen.write_appledouble(root / "._photo.jpg")
    cfg = config(tmp_path)
    rc, report, _ = scan(cfg, root)
    assert rc == 0
    files = Store.open(cfg.store_path()).files()
    status = {os.path.basename(p).decode(): (f.status, f.error) for p, f in files.items()}
    assert status["0_truncated.jpg"] == ("unreadable", "truncated")
    assert status["0_zero.jpg"] == ("unreadable", "empty file")
    assert status["0_random.jpg"] == ("unreadable", "not an image")
    assert status["0_really_a_png.jpg"][0] == status["photo.jpg"][0] == status["photo_copy.jpg"][0] == "ok"
    assert "._photo.jpg" not in status  # an AppleDouble sidecar is not a photo at all
    bad = {str(root / n) for n in ("0_truncated.jpg", "0_zero.jpg", "0_random.jpg")}
    (group,) = report["groups"]
    assert group["keep"] == str(root / "0_really_a_png.jpg")  # readable, so it may keep
    assert not bad & {group["keep"], *group["duplicates"], *(s["path"] for s in group["similar"])}
    # A plan that names an unreadable file as the keeper is refused: the good file stays.
    plan = {"groups": [{"keep": str(root / "0_truncated.jpg"), "duplicates": [str(good)]}]}
    rc, lines = purge(cfg, plan, tmp_path)
    assert rc == 1 and good.exists()
    assert any("keeper was not decoded" in line for line in lines)


class CarrierSwapped(pipeline.ContentBook):
    """A seam in the plan stage: once `path`'s content is claimed for decoding (its hash is done, its decode not yet
    started), `swap(path)` runs."""

    def __init__(self, known, path: bytes, swap):
        super().__init__(known)
        self.path, self.swap = path, swap

    def claim(self, record):
        resolved = super().claim(record)
        if resolved is None and record.path == self.path:
            self.swap(record.path)
        return resolved


def test_row22_an_io_error_on_one_copy_does_not_mark_its_readable_twin_unreadable(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    imagegen.photo(1, (160, 120)).save(root / "a.jpg", quality=90)
    shutil.copy2(root / "a.jpg", root / "b.jpg")
    cfg = config(tmp_path)
    store = Store.open(cfg.store_path())
    indexer = Indexer(store, cfg, LazyEmbedder(cfg, PixelEmbedder()), threaded=False)
    indexer.book = CarrierSwapped(indexer.book.known, b(root / "a.jpg"), os.unlink)
    indexer.reconcile(normalise_root(root), guard=False)
    Indexer(store, cfg, LazyEmbedder(cfg, PixelEmbedder()), threaded=False).reconcile(normalise_root(root))
    twin = store.files()[b(root / "b.jpg")]
    assert (twin.status, twin.error) == ("ok", "")


# --- row 23 ----------------------------------------------------------------------------------------------------------


def test_row23_format_and_orientation_twins_group_with_their_originals(tmp_path):
    from dedupd.ingest.decode import register_plugins

    register_plugins()
    root = tmp_path / "photos"
    root.mkdir()
    shown = imagegen.photo(3, (320, 240))
    shown.save(root / "a_orig.jpg", quality=92)
    imagegen.save_oriented_jpeg(shown, root / "a_rot6.jpg", 6)  # stored 240x320, EXIF orientation 6
    shown.convert("CMYK").save(root / "a_cmyk.jpg", quality=92)
    shown.save(root / "a_twin.heic", "HEIF", quality=90)
    imagegen.stored_pixels(shown, 6).save(root / "x_rotated_no_exif.jpg", quality=92)  # control: really turned
    grey = imagegen.photo(5, (320, 240)).convert("L")
    grey.save(root / "g_8bit.png")
    imagegen.grey16(np.asarray(grey, dtype=np.uint16) * 257).save(root / "g_16bit.png")
    rgba = imagegen.photo(7, (320, 240)).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 60, 60))  # a transparent corner, black underneath
    rgba.quantize(colors=255, method=Image.Quantize.FASTOCTREE).save(root / "p_palette.png")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    flat.save(root / "p_on_white.jpg", quality=92)
    frames = [imagegen.photo(10 + i, (96, 72)) for i in range(100)]
    imagegen.save_animation(frames, root / "m_anim.gif", "GIF")
    imagegen.save_animation(frames, root / "m_anim.webp", "WEBP")
    frames[0].save(root / "m_frame0.png")
    frames[1].save(root / "x_frame1.png")  # control: a later frame
    assert Image.open(root / "p_palette.png").mode == "P" and "transparency" in Image.open(root / "p_palette.png").info
    cfg = config(tmp_path)
    rc, report, _ = scan(cfg, root)
    assert rc == 0
    files = Store.open(cfg.store_path()).files()
    assert all(f.status == "ok" for f in files.values()), {p: f.error for p, f in files.items() if f.error}
    rot = files[b(root / "a_rot6.jpg")]
    assert (rot.width, rot.height) == (320, 240)  # the displayed size, not the stored one
    found = {frozenset(os.path.basename(p).decode() for p in members(g)) for g in report["groups"]}
    assert found == {
        frozenset({"a_orig.jpg", "a_rot6.jpg", "a_cmyk.jpg", "a_twin.heic"}),
        frozenset({"g_8bit.png", "g_16bit.png"}),
        frozenset({"p_palette.png", "p_on_white.jpg"}),
    }
    # An animation is the same picture as another file only when it is a byte copy (issue 10, hole 4): its first
    # frame and its other encoding are shown as similar, never purged against it.
    held = {os.path.basename(s["path"]): s["why"] for g in report["similar_groups"] for s in g["similar"]}
    assert held == {n: "multi-frame: only a byte copy is the same picture" for n in ("m_anim.webp", "m_frame0.png")}


# --- row 24 ----------------------------------------------------------------------------------------------------------


def test_row24_nfc_and_nfd_twins_are_distinct_and_purge_hits_the_named_one(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    nfc, nfd, latin1 = (os.path.join(b(root), n) for n in (b"caf\xc3\xa9.jpg", b"cafe\xcc\x81.jpg", b"caf\xe9.jpg"))
    data = tmp_path / "src.jpg"
    imagegen.photo(7, (160, 120)).save(data, quality=90)
    for path in (nfc, nfd, latin1):
        shutil.copyfile(data, path)
    cfg = config(tmp_path)
    scan(cfg, root)
    assert set(Store.open(cfg.store_path()).files()) == {nfc, nfd, latin1}
    raw = (root / "dedup_report.json").read_bytes()
    raw.decode("utf-8")  # strictly valid UTF-8
    report = json.loads(raw)
    (group,) = report["groups"]
    assert members(group) == {nfc, nfd, latin1}
    assert len({group["keep"], *group["duplicates"]}) == 3  # three distinct strings too
    # A plan naming only one of the two look-alike names removes exactly that file.
    keeper = entry_path(group["keep_info"])
    victim = next(entry_path(d) for d in group["duplicate_details"] if entry_path(d) in (nfc, nfd))
    survivor = ({nfc, nfd} - {victim}).pop()
    details = [d for d in group["duplicate_details"] if entry_path(d) == victim]
    plan = {"groups": [{**group, "duplicates": [d["path"] for d in details], "duplicate_details": details}]}
    rc, lines = purge(cfg, plan, tmp_path)
    assert rc == 0, lines
    assert not os.path.exists(victim)
    assert os.path.exists(survivor) and os.path.exists(keeper) and os.path.exists(latin1)


# --- row 25 ----------------------------------------------------------------------------------------------------------


def _photos_and_indexer(tmp_path, count):
    """(root with `count` small photos, its store, an unthreaded Indexer over it)."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(count):
        imagegen.photo(i, (96, 72)).save(root / f"{i}.jpg", quality=90)
    cfg = config(tmp_path)
    store = Store.open(cfg.store_path())
    return root, store, Indexer(store, cfg, LazyEmbedder(cfg, PixelEmbedder()), threaded=False)


def test_row25_file_vanished_or_turned_fifo_between_walk_and_hash(tmp_path):
    root, store, indexer = _photos_and_indexer(tmp_path, 4)
    entries = list(walk([b(root)], indexer.options))
    assert len(entries) == 4
    os.unlink(root / "1.jpg")  # gone between the walk and the read
    make_fifo(root / "2.jpg")  # now a FIFO: opening it for reading would block for ever
    result = run_with_deadline(lambda: indexer.index(entries), fifo=root / "2.jpg")
    files = store.files()
    assert b(root / "1.jpg") not in files
    fifo = files[b(root / "2.jpg")]
    assert fifo.status == "unreadable" and fifo.error.startswith("io error") and not fifo.content
    assert files[b(root / "0.jpg")].status == files[b(root / "3.jpg")].status == "ok"
    assert result.counters.embedded == 2
    # The next walk: the vanished file's row is gone; the FIFO is listed as what it is, never opened.
    indexer.reconcile(normalise_root(root))
    files = store.files()
    assert set(files) == {b(root / "0.jpg"), b(root / "2.jpg"), b(root / "3.jpg")}
    assert files[b(root / "2.jpg")].error == "not a regular file (FIFO)" and not files[b(root / "2.jpg")].content


def test_row25_file_turned_fifo_between_hash_and_decode(tmp_path):
    root, store, indexer = _photos_and_indexer(tmp_path, 3)
    target = root / "1.jpg"
    indexer.book = CarrierSwapped(indexer.book.known, b(target), lambda p: make_fifo(Path(os.fsdecode(p))))
    run_with_deadline(lambda: indexer.reconcile(normalise_root(root), guard=False), fifo=target)
    files = store.files()
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert files[b(target)].status == "unreadable" and "not a regular file" in files[b(target)].error
    assert files[b(root / "0.jpg")].status == files[b(root / "2.jpg")].status == "ok"


# --- row 26 ----------------------------------------------------------------------------------------------------------


def test_row26_cli_report_and_status_while_the_daemon_writes(tmp_path):
    lib = make_library(tmp_path / "photos")
    stop = threading.Event()

    def keep_writing():
        i = 0
        while not stop.is_set():
            new = lib.root / "camera" / f"new_{i:03d}.jpg"
            imagegen.photo(100 + i, (160, 120)).save(new, quality=90)
            if i % 2:
                shutil.copy2(new, lib.root / "backup" / new.name)  # and a duplicate now and then
            i += 1
            stop.wait(0.2)

    with Running(tmp_path, [lib.root]) as d:
        writer = threading.Thread(target=keep_writing, daemon=True)
        writer.start()
        seen_files: list[int] = []
        try:
            for _ in range(2):
                report = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "dedupd",
                        "report",
                        "--store",
                        str(d.config.store_path()),
                        "--model",
                        MODEL,
                        "--out",
                        "-",
                    ],
                    capture_output=True,
                    timeout=120,
                )
                assert report.returncode == 0, report.stderr
                data = json.loads(report.stdout)
                assert data["duplicate_groups"] == sum(1 for g in data["groups"] if g["duplicates"])
                assert data["total_duplicates"] == sum(len(g["duplicates"]) for g in data["groups"])
                for group in data["groups"]:
                    assert group["keep"] not in group["duplicates"]
                    assert all(p.startswith(str(lib.root) + "/") for p in (group["keep"], *group["duplicates"]))
                status = subprocess.run(
                    [sys.executable, "-m", "dedupd", "status", "--store", str(d.config.store_path()), "--model", MODEL],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert status.returncode == 0, status.stderr
                assert f"daemon: pid {os.getpid()}" in status.stdout
                seen_files.append(
                    int(next(line for line in status.stdout.splitlines() if line.startswith("files: ")).split()[1])
                )
        finally:
            stop.set()
            writer.join(10)
        assert seen_files == sorted(seen_files) and seen_files[-1] > 8  # only ever growing, and it did grow
    assert d.exit == 0
