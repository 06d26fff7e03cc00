"""Regroup through the store: the scan path's all-vs-all search, from the LanceDB vectors table to the stored pairs.

    uv run python bench/store_regroup.py --n 1000000 [--mode new old] [--store DIR]

N photo-like unit vectors (bench/search_scale.py's topics and scenes, plus near-duplicates: 25% of rows, cosine
0.93-0.995 to an original of the same chunk) are written into a real Store in chunks of --chunk rows. Then each
--mode runs in a fresh subprocess, so its peak RSS is that of the regroup alone (the writing happens in a
subprocess of its own too, so the parent that starts them stays small):

* new: `PairFinder(store, model, DedupConfig()).update([])` with no stored pair floor, so everything is searched:
  the store streams float16 batches into the index and the search uses the index's own vectors;
* old: what PairFinder did before: the whole table read with to_arrow() and turned into one float32 matrix, indexed,
  then read again for the contents to search, and that float32 matrix passed to the search.

Peak RSS is VmHWM, the high-water mark of the process's own memory since exec. getrusage's ru_maxrss is reported as
well, but Linux folds the parent's high-water mark into it at fork + exec, so it is never below the parent's size.

Before each run the pairs and the stored floor are cleared, so both modes do the same work. --store keeps (and, when
it already holds N vectors, reuses) the store, since writing 1M vectors takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _common import emit, rss_kib
from search_scale import _mix, _originals

from dedupd.config import DedupConfig
from dedupd.dedup.pairs import PairFinder, floor_key
from dedupd.dedup.search import VectorIndex
from dedupd.store import Store

MODEL = "bench/regroup-768"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child == "write":
        print(json.dumps(_ensure_store(Path(args.store), args.n, args.dim, args.chunk, args.seed)))
        return 0
    if args.child:
        print(json.dumps(_child(args.child, Path(args.store))))
        return 0
    with tempfile.TemporaryDirectory(prefix="dedupd-regroup-") as tmp:
        path = Path(args.store) if args.store else Path(tmp) / "store"
        written = _subprocess(
            path, "write", f"--n={args.n}", f"--dim={args.dim}", f"--chunk={args.chunk}", f"--seed={args.seed}"
        )
        runs = {mode: _run_child(mode, path) for mode in args.mode}
        emit(
            "store_regroup",
            {"n": args.n, "dim": args.dim, "store_mib": round(_du(path) / 2**20), **written, "runs": runs},
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="vectors")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--chunk", type=int, default=50_000, help="rows per add_vectors commit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", nargs="+", choices=("new", "old"), default=["new"], help="regroups to measure")
    parser.add_argument("--store", help="store folder to keep and reuse (default: a temporary one)")
    parser.add_argument("--child", choices=("write", "new", "old"), help=argparse.SUPPRESS)
    return parser


# --- the store ---------------------------------------------------------------------------------------------------


def _ensure_store(path: Path, n: int, dim: int, chunk: int, seed: int) -> dict:
    store = Store.open(path)
    have = store.row_counts()["vectors"]
    if have == n:
        return {"write_s": None, "reused_store": True}
    if have:
        raise SystemExit(f"{path} holds {have} vectors, not {n}: pass another --store")
    started = time.perf_counter()
    for contents, matrix in _chunks(_library(n, dim, seed), chunk):
        store.add_vectors(MODEL, contents, matrix)
        print(f"wrote {store.row_counts()['vectors']} / {n} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    wrote = time.perf_counter() - started
    store.maybe_compact(force=True)  # what a real scan's periodic compaction leaves: few fragments
    return {
        "write_s": round(wrote, 1),
        "compact_s": round(time.perf_counter() - started - wrote, 1),
        "reused_store": False,
    }


def _library(n: int, dim: int, seed: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Originals chunk by chunk, each followed by near-duplicates of its own rows: a quarter of all rows, spread
    evenly, so nothing is read back (the store's reads are what is measured)."""
    rng = np.random.default_rng([seed, 4])
    originals, copies = n - n // 4, n // 4
    names = iter(f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, size=(n, 2)).tolist())
    done = 0
    for _, block in _originals(originals, dim, seed):
        yield [next(names) for _ in range(len(block))], block
        due = copies * (done + len(block)) // originals - copies * done // originals
        done += len(block)
        if due:
            sources = block[rng.integers(0, len(block), size=due)]
            yield [next(names) for _ in range(due)], _mix(sources, rng.uniform(0.93, 0.995, due), rng)


def _chunks(parts: Iterator[tuple[list[str], np.ndarray]], rows: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Regroup the generator's pieces into commits of `rows` rows."""
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for part_names, block in parts:
        names.extend(part_names)
        blocks.append(block)
        if len(names) >= rows:
            yield names, np.vstack(blocks)
            names, blocks = [], []
    if names:
        yield names, np.vstack(blocks)


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- one regroup per fresh process -------------------------------------------------------------------------------


def _run_child(mode: str, path: Path) -> dict:
    store = Store.open(path)
    store.clear_pairs(MODEL)
    store.set_meta(floor_key(MODEL), None)  # read back as "no stored floor": the regroup searches everything
    del store
    print(f"regroup ({mode}) ...", file=sys.stderr)
    return _subprocess(path, mode)


def _subprocess(path: Path, child: str, *args: str) -> dict:
    command = [sys.executable, __file__, "--child", child, "--store", str(path), *args]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)  # stderr: progress, as it comes
    return json.loads(done.stdout)


def _child(mode: str, path: Path) -> dict:
    load_before = os.getloadavg()
    store = Store.open(path)
    opened_mib = _peak_mib()
    started = time.perf_counter()
    pairs = _regroup_new(store) if mode == "new" else _regroup_old(store)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": _peak_mib(),
        "opened_rss_mib": opened_mib,  # the peak before the regroup: interpreter, imports, the open store
        "ru_maxrss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB, and at least the parent's (see above)
        "pairs": pairs,
        "loadavg": [[round(v, 2) for v in load_before], [round(v, 2) for v in os.getloadavg()]],
    }


def _peak_mib() -> float:
    return round(rss_kib()["VmHWM"] / 1024, 1)


def _regroup_new(store: Store) -> int:
    return PairFinder(store, MODEL, DedupConfig()).update([])


def _regroup_old(store: Store) -> int:
    """PairFinder.update as it was (commit 5818ba8), first run: load everything, then read the same rows again."""
    dedup = DedupConfig()
    contents, matrix = _old_vectors(store, MODEL)
    index = VectorIndex(matrix.shape[1])
    index.add(contents, matrix)
    del matrix
    contents, matrix = _old_vectors(store, MODEL, contents)
    added = store.add_pairs(MODEL, index.neighbours(contents, matrix, dedup.k, dedup.floor))
    store.set_meta(floor_key(MODEL), dedup.floor)
    return added


def _old_vectors(store: Store, model: str, contents: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Store.vectors as it was: the whole table, every column, filtered in memory, one float32 matrix."""
    table = store._tables["vectors"].to_arrow()
    mask = pc.equal(table["model"], model)
    if contents is not None:
        mask = pc.and_(mask, pc.is_in(table["content"], pa.array(list(contents), pa.string())))
    table = table.filter(mask)
    flat = pc.list_flatten(table["vector"]).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table["content"].to_pylist(), flat.reshape(len(table), -1)


if __name__ == "__main__":
    sys.exit(main())
