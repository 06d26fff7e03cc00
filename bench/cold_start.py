"""Cold start: seconds from a fresh interpreter to the first vector, and to the end of `dedupd scan`.

    uv run python bench/cold_start.py FOLDER --model M [--preset fast] [--runs 3] [--json]

Each run starts a new Python process that imports dedupd, runs commands.scan of FOLDER into a fresh temporary
store (its report goes there too) and prints when its embedder's first embed() returned and when the scan ended.
Times are taken from the moment the parent started the child, so they include every import. The child subclasses
the scan's LazyEmbedder (the same loading and embedding code), so it runs unchanged on older commits for a
before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine


def child(folder: str, model: str, preset: str, store: str) -> None:
    from dedupd import commands
    from dedupd.config import load_config
    from dedupd.model.loader import LazyEmbedder

    first: list[float] = []

    class Timed(LazyEmbedder):
        def embed(self, pixels: list):
            vectors = super().embed(pixels)
            if not first:
                first.append(time.time())
            return vectors

    overrides = {"model.name": model, "store": store} | ({"model.preset": preset} if preset != "default" else {})
    config = load_config(None, overrides)
    report = str(Path(store).parent / "report.json")  # not the default FOLDER/dedup_report.json: leave it untouched
    commands.scan(folder, config, report, False, None, echo=lambda *_: None, embedder=Timed(config))
    print(json.dumps({"first_vector": first[0] if first else None, "end": time.time()}))


def one_run(folder: str, model: str, preset: str) -> dict[str, float | None]:
    with tempfile.TemporaryDirectory(prefix="dedupd-cold-") as tmp:
        command = [sys.executable, __file__, folder, "--model", model, "--preset", preset, "--child", tmp]
        start = time.time()
        out = subprocess.run(command, capture_output=True, text=True, check=True)
    times = json.loads(out.stdout.strip().splitlines()[-1])
    first = times["first_vector"]
    return {"first_vector_s": None if first is None else first - start, "whole_s": times["end"] - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--model", required=True)
    parser.add_argument("--preset", default="default", choices=("default", "fast"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", metavar="STORE", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.folder, args.model, args.preset, str(Path(args.child) / "store"))
        return
    result = {"folder": args.folder, "files": sum(1 for p in Path(args.folder).rglob("*") if p.is_file())}
    runs = [one_run(args.folder, args.model, args.preset) for _ in range(args.runs)]
    result |= {"preset": args.preset, "runs": runs, "machine": machine()}
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
