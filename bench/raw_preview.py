"""RAW decoding speed: dedupd's preview decode (LibRaw's embedded JPEG, drafted) against the alternatives.

A RAW file here is a real DNG written by tests/rawgen.py (LibRaw opens it like a camera's): a 16-bit CFA sensor of
--sensor pixels and an embedded baseline JPEG preview --preview pixels wide, the layout of a camera that embeds a
full-size preview (Canon, Nikon, Sony and Adobe's converter embed 1 to 24 MP). Timed, median of --repeat runs:

1. dedupd.ingest.decode.decode(path, draft_side) on the DNG: what the scan does (LibRaw open + extract_thumb + a
   JPEG decode drafted to the model's side, turned upright);
2. the same preview as a plain .jpg through decode(): the JPEG cost alone, for comparison;
3. LibRaw's half-size demosaic of the sensor data (rawpy postprocess(half_size=True)): what decoding without the
   preview would cost;
4. reading the DNG whole and hashing it (bytes_hash): the share of 1 that proves which content the picture is of.

usage: uv run python bench/raw_preview.py [--sensor 6000x4000] [--preview 6000x4000] [--draft-side 256] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import REPO, emit

sys.path.insert(0, str(REPO / "tests"))  # the DNG writer the tests use

import imagegen  # noqa: E402
import rawgen  # noqa: E402

from dedupd.ingest.decode import decode  # noqa: E402
from dedupd.ingest.hashing import bytes_hash  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _read_and_hash(path: Path) -> str:
    with open(path, "rb", buffering=0) as fp:
        return bytes_hash(fp.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensor", type=_size, default=(6000, 4000))
    parser.add_argument("--preview", type=_size, default=(6000, 4000))
    parser.add_argument("--draft-side", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    import rawpy

    with tempfile.TemporaryDirectory() as folder:
        picture = imagegen.photo(11, args.preview)
        dng = rawgen.write_dng(Path(folder) / "shot.dng", picture, sensor=args.sensor)
        jpeg = Path(folder) / "preview.jpg"
        picture.save(jpeg, quality=92)
        decode(dng, draft_side=args.draft_side)  # warm the page cache and the imports
        preview = _median(lambda: decode(dng, draft_side=args.draft_side), args.repeat)
        plain = _median(lambda: decode(jpeg, draft_side=args.draft_side), args.repeat)

        def demosaic() -> None:
            with rawpy.imread(str(dng)) as raw:
                raw.postprocess(half_size=True)

        proof = _median(lambda: _read_and_hash(dng), args.repeat)
        full = _median(demosaic, max(1, args.repeat // 2))
        emit(
            "raw_preview",
            {
                "sensor": list(args.sensor),
                "preview": list(args.preview),
                "dng_bytes": dng.stat().st_size,
                "draft_side": args.draft_side,
                "rawpy": rawpy.__version__,
                "libraw": ".".join(map(str, rawpy.libraw_version)),
                "seconds": {
                    "dedupd_decode_raw_preview": round(preview, 4),
                    "dedupd_decode_same_jpeg": round(plain, 4),
                    "libraw_half_size_demosaic": round(full, 4),
                    "read_dng_whole_and_hash": round(proof, 4),
                },
                "files_per_second": {"raw_preview": round(1 / preview, 1), "half_size_demosaic": round(1 / full, 2)},
            },
        )


if __name__ == "__main__":
    main()
