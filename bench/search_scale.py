"""Search at scale: build the automatic index over synthetic photo-like vectors, regroup all-vs-all, check recall.

    uv run python bench/search_scale.py --n 1000000 --dim 768 [--json]

Data: unit vectors with the structure of a photo library's embeddings - topics, scenes within topics (photos of one
scene sit at cosine 0.55-0.95 to its centre, so ~0.3-0.9 to each other), and near-duplicates (25% of rows, cosine
0.93-0.995 to an original).
Uniform random vectors would make any ANN look worse than it does on real embeddings.

Ground truth: exact flat search for a random sample of queries (exact all-vs-all at 1M is hours on 2 cores).
recall@k: the fraction of the true k nearest (self excluded) that the index's search returns.
pair recall: the fraction of true top-k pairs with cosine >= floor that the all-vs-all regroup returns - what the
duplicate finder depends on.

The data is generated straight into the index (duplicates read their originals back from it) so that peak RSS
measures the index, not a second copy held by the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

from dedupd.dedup.search import FLAT_MAX, NPROBE, VectorIndex, content_id

CHUNK = 8_192  # generation batch: keeps the float32 temporaries ~25 MB at dim 768


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run(args.n, args.dim, args.k, args.floor, args.sample, args.seed, args.flat_max, args.nprobe)
    print(json.dumps(result, indent=2) if args.json else _table(result))
    low = [key for key in (f"recall@{args.k}", f"pair_recall@{args.floor}") if result[key] < args.min_recall]
    if low:
        print(f"recall below {args.min_recall}: {', '.join(low)}", file=sys.stderr)
    return 1 if low else 0


def _parser() -> argparse.ArgumentParser:
    parser = data_parser(__doc__)
    parser.add_argument("--flat-max", type=int, default=FLAT_MAX, help="index flat/IVF threshold")
    parser.add_argument("--nprobe", type=int, default=NPROBE)
    parser.add_argument("--min-recall", type=float, default=0.99, help="exit 1 if either recall is below")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def run(n: int, dim: int, k: int, floor: float, sample: int, seed: int, flat_max: int, nprobe: int) -> dict:
    index = VectorIndex(dim, flat_max=flat_max, nprobe=nprobe)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    contents = fill(index, n, dim, seed)
    release_heap()
    generated, cpu_generated = time.perf_counter(), _cpu_s()
    index.build()
    built = time.perf_counter()
    query, other, sims = index.neighbour_arrays(contents, None, k, floor)
    searched, cpu_searched = time.perf_counter(), _cpu_s()
    peak_regroup = _peak_rss_mib()
    load_after = os.getloadavg()[0]
    recall = measure_recall(index, contents, query, other, k, floor, sample, seed)
    return {
        "n": n,
        "dim": dim,
        "k": k,
        "floor": floor,
        "kind": index.kind,
        "nprobe": nprobe if index.kind == "ivf" else None,
        "nlist": index.nlist,
        "cpus": os.cpu_count(),
        "generate_add_s": round(generated - started, 1),
        "build_s": round(built - generated, 1),
        "all_vs_all_s": round(searched - built, 1),
        "regroup_s": round(searched - generated, 1),
        "regroup_cpu_s": round(cpu_searched - cpu_generated, 1),
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
        "pairs": int(len(query)),
        "index_mib": round(index.nbytes / 2**20, 1),
        "peak_rss_regroup_mib": peak_regroup,
        **recall,
        "peak_rss_mib": _peak_rss_mib(),
    }


def data_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options that choose the data and the search (shared with bench/search_engines.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="vectors")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=10, help="neighbours per vector")
    parser.add_argument("--floor", type=float, default=0.90, help="pair floor (cosine)")
    parser.add_argument("--sample", type=int, default=2_000, help="queries with exact ground truth")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def fill(index: VectorIndex, n: int, dim: int, seed: int) -> list[str]:
    """Originals grouped by scene (as a camera shoots them), then near-duplicates of random originals."""
    rng = np.random.default_rng(seed)
    contents = random_contents(rng, n)

    def write(start: int, block: np.ndarray) -> None:
        index.add(contents[start : start + len(block)], block)

    fill_with(rng, n, dim, seed, write, lambda rows: index.vectors([contents[i] for i in rows]))
    return contents


def random_contents(rng: np.random.Generator, n: int) -> list[str]:
    """n random content hashes (hex), drawn first from the generator that fill_with then goes on with."""
    return [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, size=(n, 2)).tolist()]


def fill_with(
    rng: np.random.Generator,
    n: int,
    dim: int,
    seed: int,
    write: Callable[[int, np.ndarray], None],
    read: Callable[[np.ndarray], np.ndarray],
) -> None:
    """The n vectors as float16 blocks, write(first row, block) in row order; near-duplicates read their originals
    back with read(rows), so no second copy of the data is needed here."""
    originals = n - n // 4
    for start, block in _originals(originals, dim, seed):
        write(start, block.astype(np.float16))
    for start in range(originals, n, CHUNK):
        stop = min(start + CHUNK, n)
        sources = read(rng.integers(0, originals, size=stop - start))
        duplicates = _mix(sources.astype(np.float32), rng.uniform(0.93, 0.995, stop - start), rng)
        write(start, duplicates.astype(np.float16))


def _originals(m: int, dim: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """Photos at cosine 0.55-0.95 to their scene's centre; scenes (~16 photos) at 0.5-0.8 to one of ~m/512 topics."""
    rng = np.random.default_rng([seed, 1])
    n_scene = max(1, m // 16)
    topics = _unit(rng.standard_normal((max(1, n_scene // 32), dim), dtype=np.float32))
    scene_of = np.sort(rng.integers(0, n_scene, size=m))
    for start in range(0, m, CHUNK):
        scenes, which = np.unique(scene_of[start : start + CHUNK], return_inverse=True)
        centres = np.vstack([_scene_centre(topics, int(s), seed) for s in scenes])
        yield start, _mix(centres[which], rng.uniform(0.55, 0.95, len(which)), rng)


def _scene_centre(topics: np.ndarray, scene: int, seed: int) -> np.ndarray:
    """Seeded by scene, so a scene cut by a chunk boundary keeps one centre."""
    rng = np.random.default_rng([seed, 2, scene])
    return _mix(topics[scene % len(topics)][None], rng.uniform(0.5, 0.8, 1), rng)


def _mix(parent: np.ndarray, cosine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at about `cosine` to each parent row (random directions are near-orthogonal in high dim)."""
    noise = _unit(rng.standard_normal(parent.shape, dtype=np.float32))
    cosine = np.asarray(cosine, dtype=np.float32)[:, None]
    return _unit(cosine * parent + np.sqrt(1 - cosine**2) * noise)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure_recall(
    index: VectorIndex,
    contents: list[str],
    query: np.ndarray,
    other: np.ndarray,
    k: int,
    floor: float,
    sample: int,
    seed: int,
) -> dict:
    rng = np.random.default_rng([seed, 3])
    picked = np.sort(rng.choice(len(contents), size=min(sample, len(contents)), replace=False))
    vectors = index.vectors([contents[i] for i in picked])
    ids = np.array([content_id(contents[i]) for i in picked])
    started = time.perf_counter()
    true_sims, true_ids = _others(*index.search(vectors, k + 1, exact=True), ids, k)
    exact_s = time.perf_counter() - started
    _, found_ids = _others(*index.search(vectors, k + 1), ids, k)
    real = true_sims > -np.inf  # -inf marks padding (ids are signed: -1 is no marker)
    hits = sum(len(set(t[r]) & set(f)) for t, r, f in zip(true_ids, real, found_ids))
    total = int(real.sum())
    true_pairs = {(q, o) for q, row, s in zip(ids, true_ids, true_sims) for o in row[s >= floor].tolist()}
    found_pairs = _sample_pairs(ids, picked, query, other)
    return {
        "sample": int(len(picked)),
        f"recall@{k}": round(hits / max(total, 1), 4),
        f"pair_recall@{floor}": round(len(true_pairs & found_pairs) / max(len(true_pairs), 1), 4),
        "true_pairs_in_sample": len(true_pairs),
        "exact_sample_s": round(exact_s, 1),
    }


def _others(sims: np.ndarray, found: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop each query itself from its k + 1 results, keeping k."""
    keep = found != ids[:, None]
    keep &= np.cumsum(keep, axis=1) <= k
    out_sims = np.full((len(ids), k), -np.inf, np.float32)
    out_ids = np.full((len(ids), k), -1, np.int64)
    for i, row in enumerate(keep):
        out_sims[i, : row.sum()], out_ids[i, : row.sum()] = sims[i, row], found[i, row]
    return out_sims, out_ids


def _sample_pairs(ids: np.ndarray, picked: np.ndarray, query: np.ndarray, other: np.ndarray) -> set[tuple[int, int]]:
    """The regroup's pairs whose query is in the sample, as (query id, neighbour id)."""
    position = np.searchsorted(picked, query)
    in_sample = (position < len(picked)) & (picked[np.minimum(position, len(picked) - 1)] == query)
    return set(zip(ids[position[in_sample]].tolist(), other[in_sample].tolist()))


def release_heap() -> None:
    """Hand the generator's freed temporaries back to the OS (glibc keeps ~100 MB of them at 1M), so the peak RSS
    that follows is the index's own."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _table(result: dict) -> str:
    width = max(map(len, result))
    return "\n".join(f"{key:<{width}}  {value}" for key, value in result.items())


if __name__ == "__main__":
    sys.exit(main())
