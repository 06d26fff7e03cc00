"""Purge speed: how many duplicates a purge removes a second, now that every act proves itself again.

Each act hashes its victim at the gate and again once it holds it aside (or in the trash), and hashes the keeper
again at the act; the journal syncs an intent and an outcome per file. This measures what that costs on files of a
camera's size. The tree is --pairs distinct generated photos (a/NNNN.jpg, the keeper by lexi) each with a byte copy
(b/NNNN.jpg), indexed once with the deterministic embedder (dedupd.model.pixels.PixelEmbedder; the model is not the
point), then for each mode on a fresh hard-linked copy of that tree, indexed into a fresh store:

* dry: `dedupd purge` without --inplace (the plan and every gate check, nothing moved);
* delete: `dedupd purge --inplace`;
* trash: `dedupd purge --inplace --trash DIR` on the same filesystem (a rename);
* trash-other-fs: the same with DIR on /dev/shm where that is another filesystem (copy, fsync, verify, delete).

--cold drops the page cache before each timed purge (needs root), so the hashes read from the disk as on a NAS.

usage: uv run python bench/purge_speed.py [--pairs 200] [--size 4000x3000] [--cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import emit

from dedupd import commands
from dedupd.config import Config, load_config
from dedupd.model.loader import LazyEmbedder
from dedupd.model.pixels import PixelEmbedder
from dedupd.photos import photo


def make_pairs(root: Path, pairs: int, size: tuple[int, int]) -> int:
    """The keepers and their byte copies; returns the bytes of one side."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    total = 0
    for i in range(pairs):
        keeper = root / "a" / f"{i:04d}.jpg"
        photo(i, size, sensor_noise=True).save(keeper, quality=92)
        shutil.copy2(keeper, root / "b" / keeper.name)
        total += keeper.stat().st_size
    return total


def index(root: Path, config: Config, report: Path) -> None:
    code = commands.scan(
        str(root), config, str(report), False, None, echo=lambda _: None, embedder=LazyEmbedder(config, PixelEmbedder())
    )
    assert code == 0


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed_purge(work: Path, mode: str, cold: bool) -> tuple[float, list[str]]:
    config = load_config(None, {"store": str(work / "store")})
    trash = {"trash": str(work / "trash"), "trash-other-fs": str(work / "other-fs-trash")}.get(mode)
    lines: list[str] = []
    if cold:
        drop_caches()
    start = time.perf_counter()
    code = commands.purge(config, str(work / "report.json"), mode != "dry", trash, echo=lines.append)
    seconds = time.perf_counter() - start
    assert code == 0, lines[-3:]
    return seconds, lines


def linked_copy(base: Path, work: Path, mode: str) -> Path:
    """The photos hard-linked into a fresh tree (fast; a purge removes or moves only the links) and indexed into a
    fresh store: the store's records name these links' own stat."""
    shutil.copytree(base, work / "photos", copy_function=os.link)
    index(work / "photos", load_config(None, {"store": str(work / "store")}), work / "report.json")
    if mode == "trash-other-fs":
        shm = Path(tempfile.mkdtemp(prefix="dedupd-purge-bench-", dir="/dev/shm"))
        os.symlink(shm, work / "other-fs-trash")
    return work


def other_fs_available(base: Path) -> bool:
    return os.path.isdir("/dev/shm") and os.stat("/dev/shm").st_dev != os.stat(base).st_dev


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--size", default="4000x3000", help="WxH of the generated photos (default 12 MP)")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each timed purge (root)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    rows = {}
    with tempfile.TemporaryDirectory(prefix="dedupd-purge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        base = tmp / "photos"
        start = time.perf_counter()
        side_bytes = make_pairs(base, args.pairs, (width, height))
        print(f"made {args.pairs} pairs in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        modes = ["dry", "delete", "trash"] + (["trash-other-fs"] if other_fs_available(base) else [])
        for mode in modes:
            work = linked_copy(base, tmp / mode, mode)
            seconds, lines = timed_purge(work, mode, args.cold)
            rows[mode] = {
                "seconds": round(seconds, 2),
                "files_s": round(args.pairs / seconds, 1),
                "victim_mb_s": round(side_bytes / seconds / 1e6, 1),
                "summary": next((line for line in lines if line.startswith("purge:")), ""),
            }
            if mode == "trash-other-fs":
                shutil.rmtree(os.readlink(work / "other-fs-trash"), ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    emit(
        "purge_speed",
        {
            "pairs": args.pairs,
            "size": f"{width}x{height}",
            "mean_file_mb": round(side_bytes / args.pairs / 1e6, 2),
            "cache": "cold (dropped before each purge)" if args.cold else "warm (files just written)",
            "modes": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
