"""Search engines side by side: our VectorIndex against FAISS indexes on the same vectors, one process per engine.

    uv run python bench/search_engines.py --n 1000000 --dim 768 [--engines ours,faiss-ivf-sq16] [--json]

The vectors are bench/search_scale.py's photo-like data (topics, scenes, 25% near-duplicates at cosine 0.93-0.995),
generated once into a float16 file; each engine then runs in a fresh subprocess that reads the file in chunks (plain
reads, no mapping, so the file's pages never count towards its RSS) and does what a regroup does: index every
vector, then search every vector for its k nearest, keeping pairs with cosine >= floor. Its peak RSS is therefore
its own.

Engines (all IVF engines use the same lists: nlist = 2 sqrt(N) spherical k-means centroids trained by
dedupd.dedup.search.train_centroids on the same sample, nprobe = search.NPROBE):
* ours: dedupd.dedup.search.VectorIndex at its defaults (float16 blocks, exact BLAS up to FLAT_MAX, own IVF above).
* ours-flat: the same forced exact (flat_max above N): what IndexFlatIP is measured against.
* faiss-flat: IndexFlatIP (float32, exact; FAISS multiplies with BLAS for batches of queries).
* faiss-ivf-flat: IndexIVFFlat, inner product, float32 codes, k-NN search.
* faiss-ivf-sq16: IndexIVFScalarQuantizer QT_fp16 (the same 2 bytes per value as ours), k-NN search.
* faiss-ivf-sq16-range: the same index, range_search(floor), then each query's k best kept.

Ground truth: exact top k + 1 of a random sample of rows, computed in this (parent) process over the file.
recall@k: fraction of the true k nearest (self excluded) that the engine's k-NN search of the sample returns
(range engines: not measured, they answer only above the floor). pair recall: fraction of the true top-k pairs with
cosine >= floor, among the sample's rows, that the engine's all-vs-all returned.
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np
from search_scale import CHUNK, data_parser, fill_with, random_contents, release_heap

from dedupd.dedup import search

ENGINES = ("ours", "ours-flat", "faiss-flat", "faiss-ivf-flat", "faiss-ivf-sq16", "faiss-ivf-sq16-range")
QUERY_BATCH = 1 << 14  # queries per FAISS call: their float32 copy is 48 MB at dim 768


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="search-engines-", dir=args.tmp) as tmp:
        data = Path(tmp) / "vectors.f16"
        started = time.perf_counter()
        generate(data, args.n, args.dim, args.seed)
        generate_s = time.perf_counter() - started
        sample = _sample(args.n, args.sample, args.seed)
        started = time.perf_counter()
        truth_sims, truth_rows = exact_neighbours(data, args.n, args.dim, sample, args.k)
        truth = {"generate_s": round(generate_s, 1), "exact_sample_s": round(time.perf_counter() - started, 1)}
        print(json.dumps(truth), file=sys.stderr, flush=True)
        rows = []
        for engine in args.engines:  # each row also on stderr as it comes: a 1M run takes long enough to be cut
            rows.append(_run_engine(engine, data, args, sample, truth_sims, truth_rows))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"n": args.n, "dim": args.dim, "k": args.k, "floor": args.floor, "sample": len(sample), **truth}
    result["engines"] = rows
    print(json.dumps(result, indent=2) if args.json else _table(result))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = data_parser(__doc__)
    parser.add_argument("--engines", type=lambda s: s.split(","), default=list(ENGINES), help="comma-separated")
    parser.add_argument("--tmp", default=None, help="folder for the float16 data file (N x dim x 2 bytes)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # ENGINE: run one engine on --data
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sample-file", default=None, help=argparse.SUPPRESS)
    return parser


def generate(path: Path, n: int, dim: int, seed: int) -> None:
    """search_scale's vectors, in the same order, as raw float16 rows."""
    out = np.memmap(path, dtype=np.float16, mode="w+", shape=(n, dim))
    rng = np.random.default_rng(seed)
    random_contents(rng, n)  # drawn (and dropped) so that the vectors match search_scale's, which names its rows

    def write(start: int, block: np.ndarray) -> None:
        out[start : start + len(block)] = block

    fill_with(rng, n, dim, seed, write, lambda rows: np.asarray(out[rows]))
    out.flush()


def chunks(path: Path, n: int, dim: int, size: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float16 rows) by plain reads."""
    with open(path, "rb") as f:
        for start in range(0, n, size):
            count = min(size, n - start)
            yield start, np.fromfile(f, dtype=np.float16, count=count * dim).reshape(count, dim)


def read_rows(path: Path, dim: int, rows: np.ndarray) -> np.ndarray:
    """Chosen rows (float32) by one positioned read each."""
    out = np.empty((len(rows), dim), np.float32)
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, row in enumerate(rows.tolist()):
            out[i] = np.frombuffer(os.pread(fd, dim * 2, row * dim * 2), dtype=np.float16)
    finally:
        os.close(fd)
    return out


def exact_neighbours(path: Path, n: int, dim: int, sample: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k + 1 best (cosine, row) of each sample row, best first."""
    queries = read_rows(path, dim, sample)
    sims, rows = np.full((len(sample), k + 1), -np.inf, np.float32), np.full((len(sample), k + 1), -1, np.int64)
    for start, block in chunks(path, n, dim, 1 << 15):
        all_sims = np.hstack([sims, queries @ block.astype(np.float32).T])
        all_rows = np.hstack([rows, np.broadcast_to(np.arange(start, start + len(block)), (len(sample), len(block)))])
        keep = np.argpartition(-all_sims, k, axis=1)[:, : k + 1]
        sims, rows = np.take_along_axis(all_sims, keep, 1), np.take_along_axis(all_rows, keep, 1)
    order = np.argsort(-sims, axis=1, kind="stable")
    return np.take_along_axis(sims, order, 1), np.take_along_axis(rows, order, 1)


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng([seed, 3]).choice(n, size=min(size, n), replace=False))


def _run_engine(
    engine: str,
    data: Path,
    args: argparse.Namespace,
    sample: np.ndarray,
    truth_sims: np.ndarray,
    truth_rows: np.ndarray,
) -> dict:
    sample_file = data.with_name("sample.npy")
    np.save(sample_file, sample)
    command = [sys.executable, __file__, "--child", engine, "--data", str(data), "--sample-file", str(sample_file)]
    command += ["--n", str(args.n), "--dim", str(args.dim), "--k", str(args.k), "--floor", str(args.floor)]
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True)
    load_after = os.getloadavg()[0]
    if done.returncode != 0:
        return {"engine": engine, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    found_pairs = np.load(data.with_name(f"{engine}.pairs.npy"))
    knn = np.load(data.with_name(f"{engine}.knn.npy")) if row.pop("has_knn") else None
    row.update(_recall(sample, truth_sims, truth_rows, found_pairs, knn, args.k, args.floor))
    row["loadavg_1m"] = [round(load_before, 2), round(load_after, 2)]
    return row


def _recall(
    sample: np.ndarray,
    truth_sims: np.ndarray,
    truth_rows: np.ndarray,
    found_pairs: np.ndarray,
    knn: np.ndarray | None,
    k: int,
    floor: float,
) -> dict:
    true_sims, true_rows = _others(truth_sims, truth_rows, sample, k)
    true_pairs = {(q, o) for q, row, s in zip(sample.tolist(), true_rows, true_sims) for o in row[s >= floor].tolist()}
    found = set(map(tuple, found_pairs.tolist()))
    out = {f"pair_recall@{floor}": round(len(true_pairs & found) / max(len(true_pairs), 1), 4)}
    out["true_pairs_in_sample"] = len(true_pairs)
    if knn is not None:
        hits = sum(len(set(t[s > -np.inf].tolist()) & set(f.tolist())) for t, s, f in zip(true_rows, true_sims, knn))
        out[f"recall@{k}"] = round(hits / max(int((true_sims > -np.inf).sum()), 1), 4)
    return out


def _others(sims: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k best others: the query itself dropped from its k + 1, padding (row -1) kept at -inf."""
    keep = (rows != queries[:, None]) & (rows >= 0)
    keep &= np.cumsum(keep, axis=1) <= k
    out_sims, out_rows = np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    for i, row in enumerate(keep):
        out_sims[i, : row.sum()], out_rows[i, : row.sum()] = sims[i, row], rows[i, row]
    return out_sims, out_rows


# --- child: one engine, one process ---------------------------------------------------------------------------------


def _child(args: argparse.Namespace) -> dict:
    import faiss  # noqa: F401 - imported before any timer: every engine trains with it, none should pay its import

    data, engine = Path(args.data), args.child
    sample = np.load(args.sample_file)
    run = _ours if engine.startswith("ours") else _faiss
    cpu_before = _cpu_s()
    timings, pairs, knn_search = run(engine, data, args)
    cpu_s = _cpu_s() - cpu_before  # on a loaded machine the CPU time varies less than the wall time
    peak_regroup = _peak_rss_mib()
    sample_pairs = pairs[np.isin(pairs[:, 0], sample)]
    np.save(data.with_name(f"{engine}.pairs.npy"), sample_pairs)
    if knn_search is not None:
        knn = knn_search(read_rows(data, args.dim, sample), sample, args.k)
        np.save(data.with_name(f"{engine}.knn.npy"), knn)
    return {
        "engine": engine,
        **{key: round(value, 1) for key, value in timings.items()},
        "total_s": round(sum(timings.values()), 1),
        "total_cpu_s": round(cpu_s, 1),
        "pairs": int(len(pairs)),
        "peak_rss_regroup_mib": peak_regroup,
        "peak_rss_mib": _peak_rss_mib(),
        "has_knn": knn_search is not None,
    }


class RowContents(Sequence[str]):
    """Row r's content is r in hex (so its content id is r), made on demand: a list of a million str would add
    ~90 MB to this engine's peak that the daemon (which keeps contents as bytes inside the index) does not pay."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return f"{i % self.n:016x}{0:016x}"


KnnSearch = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def _ours(engine: str, data: Path, args: argparse.Namespace) -> tuple[dict, np.ndarray, KnnSearch]:
    """VectorIndex with content ids equal to row numbers (content = the row in hex, zero-padded)."""
    contents = RowContents(args.n)
    index = search.VectorIndex(args.dim, flat_max=args.n if engine == "ours-flat" else search.FLAT_MAX)
    started = time.perf_counter()
    for start, block in chunks(data, args.n, args.dim):
        index.add(contents[start : start + len(block)], block)
    release_heap()
    added = time.perf_counter()
    index.build()
    built = time.perf_counter()
    query, other, _ = index.neighbour_arrays(contents, None, args.k, args.floor)
    searched = time.perf_counter()
    timings = {"add_s": added - started, "train_assign_s": built - added, "search_s": searched - built}

    def knn(vectors: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
        return _drop_self(index.search(vectors, k + 1)[1], rows, k)

    return timings, np.column_stack([query, other]), knn


def _faiss(engine: str, data: Path, args: argparse.Namespace) -> tuple[dict, np.ndarray, KnnSearch | None]:
    started = time.perf_counter()
    index = _faiss_index(engine, data, args.n, args.dim)
    trained = time.perf_counter()
    for _, block in chunks(data, args.n, args.dim):
        index.add(block.astype(np.float32))
    release_heap()
    added = time.perf_counter()
    ranged = engine.endswith("-range")
    parts = []
    for start, block in chunks(data, args.n, args.dim, QUERY_BATCH):
        x, rows = block.astype(np.float32), np.arange(start, start + len(block))
        parts.append(_range_pairs(index, x, rows, args.k, args.floor) if ranged else _knn_pairs(index, x, rows, args))
    searched = time.perf_counter()
    timings = {"add_s": added - trained, "train_assign_s": trained - started, "search_s": searched - added}

    def knn(vectors: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
        return _drop_self(index.search(vectors, k + 1)[1], rows, k)

    return timings, np.concatenate(parts), None if ranged else knn


def _faiss_index(engine: str, data: Path, n: int, dim: int):  # a faiss.Index
    import faiss

    if engine == "faiss-flat":
        return faiss.IndexFlatIP(dim)
    nlist = search.ivf_lists(n)
    sample = read_rows(data, dim, search.training_rows(np.arange(n), nlist))
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(search.train_centroids(sample, nlist))
    if engine == "faiss-ivf-flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        qtype = faiss.ScalarQuantizer.QT_fp16
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, qtype, faiss.METRIC_INNER_PRODUCT)
    index.train(sample[:1])  # the quantizer is trained already; fp16 codes need no training
    index.nprobe = search.NPROBE
    return index


def _knn_pairs(index, x: np.ndarray, rows: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    sims, found = index.search(x, args.k + 1)
    keep = (found != rows[:, None]) & (found >= 0)
    keep &= np.cumsum(keep, axis=1) <= args.k
    keep &= sims >= args.floor
    query, slot = np.nonzero(keep)
    return np.column_stack([rows[query], found[query, slot]])


def _range_pairs(index, x: np.ndarray, rows: np.ndarray, k: int, floor: float) -> np.ndarray:
    """All results >= floor, then each query's k best others (what the k-NN engines keep)."""
    limits, sims, found = index.range_search(x, floor)
    limits = limits.astype(np.int64)
    query = np.repeat(np.arange(len(x)), np.diff(limits))
    other = found != rows[query]
    query, sims, found = query[other], sims[other], found[other]
    order = np.lexsort((-sims, query))
    query, found = query[order], found[order]
    rank = np.arange(len(query)) - np.searchsorted(query, query)
    keep = rank < k
    return np.column_stack([rows[query[keep]], found[keep]])


def _drop_self(found: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    keep = found != rows[:, None]
    keep &= np.cumsum(keep, axis=1) <= k
    return np.where(keep, found, -2)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM): ru_maxrss would start at the parent's RSS, which a child inherits at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _table(result: dict) -> str:
    head = " ".join(f"{key}={value}" for key, value in result.items() if key != "engines")
    keys = list(dict.fromkeys(key for row in result["engines"] for key in row))
    lines = [head, "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(key, "")) for key in keys) + " |" for row in result["engines"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
