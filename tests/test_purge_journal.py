"""Purge as a journaled two-phase operation: kill -9 at each step, re-run, undo, trash expiry, torn lines."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from support import PixelEmbedder, purge_process, scan_library
from test_never_last_copy_more import killed_aside

from dedupd import commands
from dedupd.errors import PurgeFailures, UsageError
from dedupd.purge.journal import journals, latest_states, read_entries, unfinished
from dedupd.purge.recovery import empty_trash


@pytest.fixture
def scanned(tmp_path):
    return scan_library(tmp_path)


def victims(report):
    return [(g["keep"], d) for g in report["groups"] for d in g["duplicates"]]


def all_files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("fault", ["after-intent:2", "after-aside:2", "before-done:2", "after-intent:1"])
def test_kill_9_during_delete_then_rerun_finishes_without_acting_twice(scanned, fault):
    lib, cfg, report = scanned
    killed = purge_process(cfg, lib.root / "dedup_report.json", fault=fault)
    assert killed.returncode == -signal.SIGKILL
    # Consistent at the moment of death: every victim is in place, or renamed aside with an open journal intent.
    (journal,) = journals(cfg.store_path() / "journal")
    open_intents = unfinished(journal)
    assert len(open_intents) == 1
    for keep, _ in victims(report):
        assert os.path.exists(keep)
    rerun = purge_process(cfg, lib.root / "dedup_report.json")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "recovered" in rerun.stdout
    left = all_files(lib.root)
    assert not any(v in left for _, v in victims(report))
    assert all(k in left for k, _ in victims(report))
    assert not any(".dedupd-purge-" in p for p in left)
    for path in journals(cfg.store_path() / "journal"):
        assert not unfinished(path)
    done = [
        last
        for path in journals(cfg.store_path() / "journal")
        for _, last in latest_states(path).values()
        if last.state == "done"
    ]
    assert sorted(os.fsdecode(e.victim_path) for e in done) == sorted(v for _, v in victims(report))


@pytest.mark.parametrize("fault", ["after-intent:2", "before-done:2", "after-copy:1", "after-aside:1"])
@pytest.mark.parametrize("trash_on", ["same-fs", "other-fs"])
def test_kill_9_during_trash_then_rerun(scanned, tmp_path, fault, trash_on):
    lib, cfg, report = scanned
    trash = tmp_path / "trash" if trash_on == "same-fs" else Path("/dev/shm") / f"dedupd-test-{os.getpid()}-{fault}"
    if trash_on == "other-fs" and os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem here")
    if fault in ("after-copy:1", "after-aside:1") and trash_on == "same-fs":
        pytest.skip("a same-filesystem move never copies, nor renames aside")
    try:
        killed = purge_process(cfg, lib.root / "dedup_report.json", "--trash", trash, fault=fault)
        assert killed.returncode == -signal.SIGKILL
        for _, victim in victims(report):
            rel = os.path.relpath(victim, lib.root)
            assert os.path.exists(victim) or (trash / rel).is_file()
        rerun = purge_process(cfg, lib.root / "dedup_report.json", "--trash", trash)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        for keep, victim in victims(report):
            rel = os.path.relpath(victim, lib.root)
            assert not os.path.exists(victim) and (trash / rel).is_file() and os.path.exists(keep)
        assert len([p for p in trash.rglob("*") if p.is_file()]) == len(victims(report))
        assert not any(".dedupd-purge-" in p for p in all_files(lib.root))  # no original left hidden aside
    finally:
        if trash_on == "other-fs":
            import shutil

            shutil.rmtree(trash, ignore_errors=True)


def test_undo_restores_trashed_files(scanned, tmp_path):
    lib, cfg, report = scanned
    before = {p: Path(p).read_bytes() for _, p in victims(report)}
    lines: list[str] = []
    commands.purge(cfg, str(lib.root / "dedup_report.json"), True, str(tmp_path / "trash"), echo=lines.append)
    assert not any(os.path.exists(p) for p in before)
    (journal,) = journals(cfg.store_path() / "journal")
    assert commands.undo_purge(cfg, str(journal), echo=lines.append) == 0
    assert all(Path(p).read_bytes() == data for p, data in before.items())
    assert not [p for p in (tmp_path / "trash").rglob("*") if p.is_file()]


def test_undo_of_a_delete_says_it_cannot_restore(scanned):
    from dedupd.errors import PurgeFailures

    lib, cfg, report = scanned
    commands.purge(cfg, str(lib.root / "dedup_report.json"), True, None, echo=lambda s: None)
    (journal,) = journals(cfg.store_path() / "journal")
    lines: list[str] = []
    with pytest.raises(PurgeFailures):
        commands.undo_purge(cfg, str(journal), echo=lines.append)
    assert all("it was deleted" in line for line in lines)


def test_undo_of_a_file_that_is_not_a_journal_is_refused(scanned, caplog):
    """`purge --undo REPORT` (any file but a journal, here the report by mistake): once exit 0 with a warning per
    line ("line 1 is torn or corrupt; ignored", twice over) and nothing said; now one line naming the file as not a
    purge journal, exit 2, before the journal code reads it."""
    lib, cfg, report = scanned
    path = lib.root / "dedup_report.json"
    with pytest.raises(UsageError, match=f"^{path}: not a purge journal \\(they live in .*journal\\)$"):
        commands.undo_purge(cfg, str(path))
    assert "torn or corrupt" not in caplog.text


def test_trash_empty_respects_age(scanned, tmp_path):
    lib, cfg, report = scanned
    commands.purge(cfg, str(lib.root / "dedup_report.json"), True, str(tmp_path / "trash"), echo=lambda s: None)
    folder = cfg.store_path() / "journal"
    assert not empty_trash(folder, older_than=3600).lines  # nothing is an hour old yet
    assert [p for p in (tmp_path / "trash").rglob("*") if p.is_file()]
    import time

    tally = empty_trash(folder, older_than=3600, now=time.time() + 7200)
    assert len(tally.lines) == len(victims(report))
    assert not [p for p in (tmp_path / "trash").rglob("*") if p.is_file()]


def test_a_torn_journal_line_is_ignored_and_recovery_goes_on(scanned, tmp_path):
    lib, cfg, report = scanned
    killed = purge_process(cfg, lib.root / "dedup_report.json", fault="after-aside:1")
    assert killed.returncode == -signal.SIGKILL
    (journal,) = journals(cfg.store_path() / "journal")
    with open(journal, "ab") as f:
        f.write(b'{"id": 99, "state": "inte')  # a write cut short
    assert len(read_entries(journal)) == 1
    rerun = purge_process(cfg, lib.root / "dedup_report.json")
    assert rerun.returncode == 0 and not any(os.path.exists(v) for _, v in victims(report))


def test_two_purges_at_once_the_second_refuses(scanned):
    from dedupd.store import FileLock

    lib, cfg, report = scanned
    with FileLock(cfg.store_path() / "purge.lock", "purge"):
        second = purge_process(cfg, lib.root / "dedup_report.json")
    assert second.returncode == 2 and "purge lock" in second.stderr
    assert all(os.path.exists(v) for _, v in victims(report))


def test_a_rerun_of_a_finished_purge_counts_its_items_as_already_done_not_acted_on(scanned):
    lib, cfg, report = scanned
    first = purge_process(cfg, lib.root / "dedup_report.json")
    assert first.returncode == 0, first.stdout + first.stderr

    rerun = purge_process(cfg, lib.root / "dedup_report.json")

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"purge: acted on 0, skipped 0, already done {len(victims(report))}" in rerun.stdout, rerun.stdout


def test_a_dry_run_leaves_an_interrupted_purge_as_it_is_and_says_so(scanned):
    """A dry run changes nothing: it used to run recovery, which finishes deletes and completes moves, and then
    printed "dry run: nothing changed". The open act is now listed and left to the next purge with --inplace."""
    lib, cfg, report = scanned
    killed = purge_process(cfg, lib.root / "dedup_report.json", fault="after-aside:1")
    assert killed.returncode == -signal.SIGKILL
    hidden = sorted(lib.root.rglob(".dedupd-purge-*"))
    lines: list[str] = []

    with contextlib.suppress(PurgeFailures):  # the victim waiting aside is not at its path: skipped
        commands.purge(cfg, str(lib.root / "dedup_report.json"), inplace=False, trash=None, echo=lines.append)

    assert len(hidden) == 1 and sorted(lib.root.rglob(".dedupd-purge-*")) == hidden, lines
    assert any(line.startswith("open from an interrupted purge:") for line in lines), lines
    assert [len(unfinished(j)) for j in journals(cfg.store_path() / "journal")] == [1]


def test_status_names_a_file_an_interrupted_purge_left_under_a_hidden_name(tmp_path):
    """After a kill between the rename aside and the unlink, the file waits under a `.dedupd-purge-*` name that no
    scan indexes. Nothing but the killed process's own output ever named it; status now does."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 491)
    (hidden,) = root.rglob(".dedupd-purge-*")
    lines: list[str] = []

    commands.status(cfg, echo=lines.append)

    assert f"open from an interrupted purge: {victim}; its file waits at {hidden} " in "\n".join(lines), lines


def test_a_file_put_back_by_undo_is_not_purged_again(scanned, tmp_path):
    """With the daemon's purge.auto on, `purge --undo` was undone within seconds: the restored file was a duplicate
    as before and the next purge took it again (deleted for good where purge.action had since become delete). An
    undo now records a keep-all decision for the pair, which every later purge honours."""
    lib, cfg, report = scanned
    before = {p: Path(p).read_bytes() for _, p in victims(report)}
    lines: list[str] = []
    commands.purge(cfg, str(lib.root / "dedup_report.json"), True, str(tmp_path / "trash"), echo=lines.append)
    (journal,) = journals(cfg.store_path() / "journal")
    commands.undo_purge(cfg, str(journal), echo=lines.append)
    embedder = commands.LazyEmbedder(cfg, PixelEmbedder())  # the next scan indexes the restored files again
    commands.scan(str(lib.root), cfg, None, False, None, echo=lines.append, embedder=embedder)

    with contextlib.suppress(PurgeFailures):
        commands.purge(cfg, None, True, None, echo=lines.append)

    assert all(Path(p).read_bytes() == data for p, data in before.items()), lines
    assert sum(line.startswith("decided ") for line in lines) == len(before), lines
