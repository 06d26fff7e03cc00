"""What a decode costs, and how much of it is the proof: reading the file whole and hashing the bytes decoded.

Since 2026-12-05 decode() reads a file once, whole, hashes those bytes (so the picture names the content it came
from) and decodes from memory. This script times, per file and in one run, the CPU of
1. decode_for_model(path, draft_side, max_pixels): what a decode worker does (decode, upright, preprocess);
2. reading the file whole and bytes_hash() of it: the part added by the proof.
The files are --count generated camera-sized JPEGs (tests/imagegen.py, quality 92), or every file of --folder.

usage: uv run python bench/decode_cost.py [--folder DIR | --count 32 --size 4000x3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import REPO, emit

sys.path.insert(0, str(REPO / "tests"))  # the photo generator the tests use

import imagegen  # noqa: E402

from dedupd.ingest.decode import DEFAULT_MAX_PIXELS  # noqa: E402
from dedupd.ingest.decode_pool import Failed, decode_for_model  # noqa: E402
from dedupd.ingest.hashing import bytes_hash  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def _write_jpegs(folder: Path, count: int, size: tuple[int, int]) -> None:
    for seed in range(count):
        imagegen.photo(seed, size).save(folder / f"{seed:03}.jpg", quality=92)


def _cpu_ms_per_file(paths: list[bytes], work: Callable[[bytes], object], repeat: int) -> float:
    """The best of --repeat rounds: CPU time of the whole round over the files, ms a file."""
    rounds = []
    for _ in range(repeat):
        start = time.process_time()
        for path in paths:
            work(path)
        rounds.append((time.process_time() - start) / len(paths) * 1000)
    return min(rounds)


def _decode(path: bytes, draft_side: int) -> None:
    result = decode_for_model(path, draft_side, DEFAULT_MAX_PIXELS)
    if isinstance(result, Failed):
        raise SystemExit(f"{os.fsdecode(path)}: {result.reason}")


def _read_and_hash(path: bytes) -> str:
    with open(path, "rb", buffering=0) as fp:
        return bytes_hash(fp.read())


def _measure(folder: Path, args: argparse.Namespace) -> dict:
    paths = sorted(os.fsencode(p) for p in folder.iterdir() if p.is_file())
    for path in paths:  # warm the page cache and the imports
        _decode(path, args.draft_side)
    decode_ms = _cpu_ms_per_file(paths, lambda p: _decode(p, args.draft_side), args.repeat)
    proof_ms = _cpu_ms_per_file(paths, _read_and_hash, args.repeat)
    return {
        "files": len(paths),
        "mean_bytes": round(sum(os.path.getsize(p) for p in paths) / len(paths)),
        "draft_side": args.draft_side,
        "cpu_ms_per_file": {"decode_for_model": round(decode_ms, 3), "read_whole_and_hash": round(proof_ms, 3)},
        "proof_share_of_decode": round(proof_ms / decode_ms, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--size", type=_size, default=(4000, 3000))
    parser.add_argument("--draft-side", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.folder:
        emit("decode_cost", _measure(args.folder, args))
        return
    with tempfile.TemporaryDirectory() as folder:
        _write_jpegs(Path(folder), args.count, args.size)
        emit("decode_cost", {"generated": f"{args.size[0]}x{args.size[1]} JPEG q92", **_measure(Path(folder), args)})


if __name__ == "__main__":
    main()
