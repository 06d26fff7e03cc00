"""The driver's commit rate for a Ray bulk run: Store.add_vectors (a merge-insert on the key) into a new store.

    uv run python bench/store_commit.py CHUNK TOTAL          # vectors per commit, vectors in all: 512 20480
    uv run python bench/store_commit.py --into 0 100000 300000   # one 4096-vector commit into a table of N rows

BENCHMARKS.md section 7.
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np

from dedupd.store import Store

DIM = 768
RNG = np.random.default_rng(0)


def rows(start: int, n: int) -> tuple[list[str], np.ndarray]:
    return [f"{i:032x}" for i in range(start, start + n)], RNG.standard_normal((n, DIM)).astype(np.float32)


def growing(store: Store, chunk: int, total: int) -> None:
    facts = [{"width": 4000, "height": 3000, "format": "JPEG", "size": 5_000_000}] * chunk
    times = []
    for start in range(0, total, chunk):
        contents, matrix = rows(start, chunk)
        began = time.perf_counter()
        store.add_vectors("m", contents, matrix, facts)
        times.append(time.perf_counter() - began)
    first, last = np.mean(times[:3]) * 1000, np.mean(times[-3:]) * 1000
    print(
        f"chunk {chunk} total {total}: {total / sum(times):.0f} vectors/s; per commit {first:.0f} ms first, "
        f"{last:.0f} ms last"
    )


def into(store: Store, sizes: list[int]) -> None:
    have = 0
    for target in sizes:
        while have < target:
            n = min(50_000, target - have)
            store.add_vectors("m", *rows(have, n))
            have += n
        store.maybe_compact(force=True)
        best = float("inf")
        for _ in range(2):
            contents, matrix = rows(have, 4096)
            began = time.perf_counter()
            store.add_vectors("m", contents, matrix)
            best = min(best, time.perf_counter() - began)
            have += 4096
        print(f"table {target}: one 4096-vector commit {best * 1000:.0f} ms = {4096 / best:.0f} vectors/s", flush=True)


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        store = Store.open(folder)
        if argv[0] == "--into":
            into(store, [int(n) for n in argv[1:]])
        else:
            growing(store, int(argv[0]), int(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
