"""Reconcile rate of an unchanged tree: how fast a re-scan (or the daemon's periodic rescan) gets through files that
have not changed. Target: >= 10k files/s, zero inference.

The tree is --files small distinct JPEGs in --dirs folders. It is indexed once by the real Indexer with a
deterministic embedder (dedupd.model.pixels.PixelEmbedder: an 8x8 thumbnail; the model is not the point here), then:

* fresh: a new Indexer (what `dedupd scan` and a daemon start build: the store's file table and content book are
  loaded) whose embedder raises if called, then reconcile(root): walk + stat + classify + mark the root;
* warm: reconcile(root) again on that same Indexer (the daemon's periodic rescan);
* scan: the whole `dedupd scan` command on the unchanged tree (adds groups and the report), embedder raising too.

usage: uv run python bench/reconcile.py [--files 50000] [--dirs 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import RaisingEmbedder, emit, tiny_jpeg

from dedupd import commands
from dedupd.config import load_config
from dedupd.ingest.indexer import Indexer
from dedupd.model.loader import LazyEmbedder
from dedupd.model.pixels import PixelEmbedder
from dedupd.paths import normalise_root
from dedupd.store import Store


def make_tree(root: Path, files: int, dirs: int) -> float:
    start = time.perf_counter()
    per_dir = -(-files // dirs)
    for i in range(files):
        folder = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:06d}.jpg").write_bytes(tiny_jpeg(i))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--dirs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dedupd-reconcile-") as tmp_name:
        tmp = Path(tmp_name)
        made = make_tree(tmp / "photos", args.files, args.dirs)
        print(f"made {args.files} files in {made:.1f} s", file=sys.stderr)
        root = normalise_root(tmp / "photos")
        config = load_config(None, {"store": str(tmp / "store")})
        store = Store.open(config.store_path())

        fake = PixelEmbedder()
        first = Indexer(store, config, LazyEmbedder(config, fake))
        start = time.perf_counter()
        result = first.reconcile(root, guard=False)
        first_s = time.perf_counter() - start
        first.close()
        assert result.counters.embedded == args.files, result.counters
        print(f"first index: {first_s:.1f} s", file=sys.stderr)

        raising = RaisingEmbedder()
        start = time.perf_counter()
        indexer = Indexer(store, config, LazyEmbedder(config, raising))
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        fresh = indexer.reconcile(root)
        fresh_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = indexer.reconcile(root)
        warm_s = time.perf_counter() - start
        indexer.close()
        for r in (fresh, warm):
            c = r.counters
            assert c.unchanged == args.files and c.hashed == c.embedded == c.committed == r.removed == 0, c

        start = time.perf_counter()
        code = commands.scan(
            os.fsdecode(root),
            config,
            str(tmp / "report.json"),
            False,
            None,
            echo=lambda _: None,
            embedder=LazyEmbedder(config, raising),
        )
        scan_s = time.perf_counter() - start
        assert code == 0 and raising.images == 0
    n = args.files
    emit(
        "reconcile",
        {
            "files": n,
            "dirs": args.dirs,
            "embedder": "fake (8x8 thumbnail) for the first index; raising afterwards",
            "first_index_s": round(first_s, 2),
            "first_index_files_s": round(n / first_s),
            "indexer_load_s": round(load_s, 2),
            "fresh_reconcile_s": round(fresh_s, 2),
            "fresh_files_s": round(n / fresh_s),
            "fresh_with_load_files_s": round(n / (load_s + fresh_s)),
            "warm_reconcile_s": round(warm_s, 2),
            "warm_files_s": round(n / warm_s),
            "scan_command_s": round(scan_s, 2),
            "scan_command_files_s": round(n / scan_s),
            "inference_calls_after_first_index": raising.images,
            "target_files_s": 10_000,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
