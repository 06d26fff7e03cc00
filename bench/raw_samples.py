"""Real camera RAW files through dedupd's decode: what each gives, against what LibRaw itself says, and how fast.

    uv run python bench/raw_samples.py FOLDER [--repeat 20]

For every RAW file in FOLDER (by extension, as the scan picks them): dedupd.ingest.decode.decode(path) (LibRaw's
embedded preview, turned upright, sized as the sensor), then the checks a user relies on: the size recorded is the
sensor's as rawpy reports it (not the preview's), the format is the extension's, and a file without a preview is
unreadable with the reason "no preview". One JSON document, a row per file with the median decode time.

The team's samples (real ARW, NEF, RW2 and CR3 files from ExifTool's and imagemeta's test data, with sources and
licences) lie in ../shared/raw-samples; they are not part of the repository, so no test depends on them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from _common import emit

from dedupd.ingest.decode import DecodeError, decode
from dedupd.paths import RAW_EXTENSIONS


def sensor_size(path: Path) -> tuple[int, int] | None:
    """LibRaw's visible sensor area as displayed (turned when the camera was held upright); None for a file LibRaw
    cannot open (its row then says what decode() made of it)."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            sizes = raw.sizes
    except (rawpy.LibRawError, OSError):
        return None
    return (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)


def check(path: Path, repeat: int) -> dict[str, Any]:
    row: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size, "sensor": sensor_size(path)}
    try:
        decoded = decode(path)
    except DecodeError as exc:
        return row | {"decoded": False, "reason": exc.reason, "ok": exc.reason == "no preview"}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        decode(path)
        times.append(time.perf_counter() - start)
    size = (decoded.width, decoded.height)
    row |= {"decoded": True, "size": size, "preview": decoded.image.size, "format": decoded.format}
    row |= {"camera": decoded.capture.camera, "ms": round(1000 * statistics.median(times), 2)}
    return row | {"ok": size == row["sensor"] and decoded.format == path.suffix[1:].upper()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in RAW_EXTENSIONS)
    emit("raw_samples", {"folder": str(args.folder), "files": [check(path, args.repeat) for path in files]})


if __name__ == "__main__":
    main()
