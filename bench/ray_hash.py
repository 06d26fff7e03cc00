"""Hashing on the driver (2 threads, as the pipeline does) against Ray Data tasks on a local runtime (num_cpus=2)
streaming the hashes back: whether distributing the hashing pays. Needs the ray extra.

    uv run python bench/ray_hash.py FOLDER

BENCHMARKS.md section 7.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dedupd.cluster import ray_embed  # Ray's environment switches first
from dedupd.ingest.hashing import content_hash

ray = ray_embed.ray


def hash_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"path": batch["path"], "content": np.array([content_hash(p) for p in batch["path"]])}


def on_ray(paths: list[str]) -> float:
    began = time.perf_counter()
    dataset = ray.data.from_items([{"path": p} for p in paths]).map_batches(hash_batch, batch_size=64)
    assert sum(len(b["content"]) for b in dataset.iter_batches(batch_size=None)) == len(paths)
    return time.perf_counter() - began


def main(folder: str) -> None:
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)
    megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
    for path in paths:
        content_hash(path)  # the page cache warm for both
    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(content_hash, paths))
    local = time.perf_counter() - began
    ray_embed.start_ray("local", num_cpus=2)
    ray.data.DataContext.get_current().enable_progress_bars = False
    first, second = on_ray(paths), on_ray(paths)
    print(
        f"{len(paths)} files, {megabytes:.0f} MB, warm: driver 2 threads {local:.2f} s = {megabytes / local:.0f} "
        f"MB/s; Ray tasks {first:.2f} s first dataset, {second:.2f} s second = {megabytes / second:.0f} MB/s"
    )


if __name__ == "__main__":
    main(sys.argv[1])
