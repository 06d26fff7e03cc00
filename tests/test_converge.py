"""Issue 10, holes 6 and 7 and the smaller ones: after kill -9, a big rename, a lost pairs table or a killed purge,
the store converges to what a fresh scan of the same tree gives."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from PIL import Image
from support import PixelEmbedder, Running, b, make_library, purge_lines, scan_library, wait_for
from test_daemon_process import make_tree, start, stop, write_config
from test_purge_journal import purge_process

from dedupd import commands
from dedupd.config import load_config
from dedupd.ingest.indexer import Indexer, roots_state
from dedupd.model.loader import LazyEmbedder
from dedupd.paths import normalise_root
from dedupd.store import Store

MODEL = PixelEmbedder.model_id
WAIT = 240.0
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def pair_keys(store: Store, model: str) -> set[tuple[str, str]]:
    return {(a, b) for a, b, _ in store.pairs(model)}


def resized_copies(src: Path, dst: Path, n: int) -> None:
    dst.mkdir()
    originals = sorted(src.glob("*.jpg"))
    for i in range(n):
        with Image.open(originals[i % len(originals)]) as im:
            side = 120 - 4 * (i // len(originals))  # no two copies byte-equal: each one is embedded
            im.resize((side, side * 3 // 4)).save(dst / f"r{i:03d}.jpg", quality=85)


# --- hole 6: kill -9 during the bulk embed ------------------------------------------------------------------------


def test_hole6_kill_9_between_vector_commits_and_pair_search_then_restart_equals_a_fresh_scan(tmp_path, tiny_siglip2):
    root = tmp_path / "photos"
    make_tree(root / "a", 8, (160, 120))
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "store", [root], tiny_siglip2)
    report = tmp_path / "store" / "report.json"
    proc = start(cfg)
    try:
        wait_for(report.exists, WAIT, "the first bulk embed")  # pairs searched, pair floor stored
        assert stop(proc)[0] == 0
        resized_copies(root / "a", root / "b", 24)
        report.unlink()
        # Vectors of the new copies are committed batch by batch (commit_every 4); their pairs are searched only
        # after the last one. The daemon kills itself right after the first of those commits: a kill timed by
        # polling the store from here came after all 24 on a fast machine, and tested nothing.
        proc = start(cfg, {"DEDUPD_FAULT": "after-vectors:1"})
        proc.communicate(timeout=WAIT)
        assert proc.returncode == -signal.SIGKILL
        assert 8 < Store.open(tmp_path / "store").row_counts()["vectors"] < 8 + 24
        proc = start(cfg)

        def settled():
            files = Store.open(tmp_path / "store").files().values()
            return report.exists() and len(files) == 32 and all(f.status == "ok" for f in files)

        wait_for(settled, WAIT, "the restarted daemon to embed every pending file")
        assert stop(proc)[0] == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    model = json.loads(report.read_bytes())["model"]
    fresh = load_config(None, {"store": str(tmp_path / "fresh-store"), "model": {"name": str(tiny_siglip2)}})
    commands.scan(str(root), fresh, str(tmp_path / "fresh.json"), False, None, echo=lambda s: None)
    ours, theirs = Store.open(tmp_path / "store"), Store.open(tmp_path / "fresh-store")
    assert pair_keys(ours, model) == pair_keys(theirs, model) and pair_keys(theirs, model)
    assert {p: f.content for p, f in ours.files().items()} == {p: f.content for p, f in theirs.files().items()}


# --- hole 7: a big rename inside a root -----------------------------------------------------------------------------


def bulk_tree(root: Path, bulk: int = 10, loose: int = 2) -> Path:
    (root / "bulk").mkdir(parents=True)
    lib = make_library(root / "lib", distinct=loose + 2)  # a few duplicates outside the folder that moves
    for i in range(bulk):
        Image.open(lib.originals[0]).resize((64 + 4 * i, 48 + 3 * i)).save(root / "bulk" / f"b{i:02d}.jpg")
    return root


def test_hole7_renaming_most_of_a_root_is_a_move_not_a_vanish(tmp_path):
    root = bulk_tree(tmp_path / "r1")
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    store = Store.open(cfg.store_path())
    embedder = PixelEmbedder()
    indexer = Indexer(store, cfg, LazyEmbedder(cfg, embedder), threaded=False)
    r = normalise_root(root)
    indexer.reconcile(r)
    before = {os.path.basename(p): f.content for p, f in store.files().items()}
    images = embedder.images
    os.rename(root / "bulk", root / "bulk_renamed")  # 10 of 18 files: over max_vanish_fraction, but a move
    result = indexer.reconcile(r)
    assert not result.offline and roots_state(store)[str(root)]["state"] == "online"
    files = store.files()
    assert not any(b"/bulk/" in p for p in files) and sum(b"/bulk_renamed/" in p for p in files) == 10
    assert {os.path.basename(p): f.content for p, f in files.items()} == before
    assert embedder.images == images  # moves reuse the stored vectors
    # A real vanish still trips the guard: the folder leaves the root.
    os.rename(root / "bulk_renamed", tmp_path / "elsewhere")
    assert "vanished" in indexer.reconcile(r).offline
    assert sum(b"/bulk_renamed/" in p for p in store.files()) == 10


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_hole7_daemon_keeps_a_root_online_when_most_of_it_is_renamed(tmp_path, mode):
    root = bulk_tree(tmp_path / "r1")
    with Running(tmp_path, [root], **{"watch.mode": mode}) as d:
        wait_for(lambda: len(d.paths()) == 18, what="the first reconcile")
        images = d.embedder.images
        os.rename(root / "bulk", root / "bulk_renamed")

        def moved():
            paths = d.paths()
            return sum(b"/bulk_renamed/" in p for p in paths) == 10 and not any(b"/bulk/" in p for p in paths)

        wait_for(moved, 60, "the renamed folder in the store")
        store = Store.open(d.config.store_path())
        assert roots_state(store)[str(root)]["state"] == "online"
        new = root / "bulk_renamed" / "late.jpg"
        shutil.copy(root / "lib" / "camera" / "img_001.jpg", new)  # the root keeps being indexed
        wait_for(lambda: b(new) in d.paths(), 60, "a file added after the rename")
        assert d.embedder.images == images + 0  # an exact copy of a known picture: nothing embedded
    assert d.exit == 0


# --- smaller holes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["emptied", "missing"])
def test_lost_pairs_table_is_rebuilt_from_the_vectors(tmp_path, damage):
    lib, cfg, report = scan_library(tmp_path)
    assert report["duplicate_groups"]
    store = Store.open(cfg.store_path())
    expected = pair_keys(store, MODEL)
    if damage == "emptied":
        store.clear_pairs(MODEL)
    else:
        shutil.rmtree(cfg.store_path() / "pairs.lance")
    embedder = PixelEmbedder()
    commands.scan(str(lib.root), cfg, None, False, None, echo=lambda s: None, embedder=LazyEmbedder(cfg, embedder))
    assert embedder.images == 0  # rebuilt from the stored vectors, nothing re-embedded
    assert pair_keys(Store.open(cfg.store_path()), MODEL) == expected
    again = json.loads((lib.root / "dedup_report.json").read_bytes())
    assert again["duplicate_groups"] == report["duplicate_groups"]


def test_killed_purge_leaves_no_removed_file_in_the_store(tmp_path):
    lib, cfg, report = scan_library(tmp_path)
    victims = [d for g in report["groups"] for d in g["duplicates"]]
    assert len(victims) >= 2
    killed = purge_process(cfg, lib.root / "dedup_report.json", fault="before-done:2")
    assert killed.returncode == -signal.SIGKILL
    removed = [v for v in victims if not os.path.exists(v)]
    assert len(removed) == 2
    lines: list[str] = []
    commands.status(cfg, echo=lines.append, model=MODEL)
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    assert fields["duplicates"] == str(len(victims) - 2), lines
    assert not set(map(b, removed)) & set(Store.open(cfg.store_path()).files())
    rc, out = purge_lines(cfg, None, True)
    assert rc == 0, out
    assert f"purge: acted on {len(victims) - 2}, skipped 0" in out, out
    assert not any(v in line for v in removed for line in out if not line.startswith("recovered"))


def test_a_duplicate_with_a_long_name_is_deleted(tmp_path):
    lib = make_library(tmp_path / "photos")
    long = lib.root / "zz" / ("x" * 246 + ".jpg")  # 250 bytes (NAME_MAX is 255), sorting after its keeper
    long.parent.mkdir()
    os.rename(next(iter(lib.exact)), long)
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    commands.scan(
        str(lib.root), cfg, None, False, None, echo=lambda s: None, embedder=LazyEmbedder(cfg, PixelEmbedder())
    )
    rc, out = purge_lines(cfg, str(lib.root / "dedup_report.json"), True)
    assert rc == 0, out
    assert not long.exists() and not any(".dedupd-purge-" in p.name for p in long.parent.iterdir())


def test_status_names_a_fifo_and_why_it_is_skipped(tmp_path):
    lib = make_library(tmp_path / "photos")
    os.mkfifo(lib.root / "camera" / "x.jpg")
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    commands.scan(
        str(lib.root), cfg, None, False, None, echo=lambda s: None, embedder=LazyEmbedder(cfg, PixelEmbedder())
    )
    lines: list[str] = []
    commands.status(cfg, echo=lines.append, model=MODEL)
    unreadable = next(line for line in lines if line.startswith("unreadable: "))
    assert "not a regular file" in unreadable, lines


class FailsOnce(PixelEmbedder):
    """The model fails on its first batch (a CUDA error, say), then works: a daemon goes on to its next batch."""

    def embed(self, images):
        if not self.calls:
            self.calls += 1
            raise RuntimeError("the first batch fails")
        return super().embed(images)


def test_a_batch_that_raised_leaves_nothing_claimed_and_the_next_run_indexes_everything(tmp_path):
    lib = make_library(tmp_path / "photos")
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    store = Store.open(cfg.store_path())
    indexer = Indexer(store, cfg, LazyEmbedder(cfg, FailsOnce()), threaded=False)
    root = normalise_root(lib.root)
    with pytest.raises(RuntimeError, match="first batch"):
        indexer.reconcile(root)
    indexer.reconcile(root)
    files = store.files()
    assert len(files) == 8 and sum(f.status == "ok" for f in files.values()) == 7
    assert pair_keys(store, MODEL)
