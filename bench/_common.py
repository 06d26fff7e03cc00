"""Shared by the scripts in bench/: an embedder that always fails, small distinct JPEGs, machine facts, memory readings.

The scripts import this as `_common` (a script's own folder is on sys.path when run as `python bench/x.py`).
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from dedupd.model.pixels import PixelEmbedder
from dedupd.photos import photo

REPO = Path(__file__).resolve().parent.parent


class RaisingEmbedder(PixelEmbedder):
    """Same identity as PixelEmbedder, so a store it filled counts as embedded; any inference is an error."""

    def embed(self, images: list) -> np.ndarray:
        raise AssertionError(f"inference on an unchanged tree ({len(images)} images)")


def tiny_jpeg(seed: int, size: tuple[int, int] = (32, 24)) -> bytes:
    """A small JPEG whose pixels differ for every seed (so every file is its own content)."""
    buffer = io.BytesIO()
    photo(seed, size).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def rss_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    """All descendants of pid (decode workers, the forkserver)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found.extend(int(k) for k in kids)
        todo.extend(int(k) for k in kids)
    return found


def emit(name: str, result: dict) -> None:
    """Print the result as one JSON document (with the machine and its load), for BENCHMARKS.md."""
    print(json.dumps({"benchmark": name, "machine": machine(), **result}, indent=2))
