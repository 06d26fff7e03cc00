"""Cold start, the imports alone: seconds each heavy library takes to import, in the order a scan needs them.

    uv run python bench/import_time.py [--runs 3]

Each run is a new interpreter that imports, in turn, torch, transformers' top level, the SigLIP2 model class (what
loading the model imports) and lancedb, and prints the seconds of each. `python -X importtime` on the same child
names the modules inside them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import machine

CHILD = """
import json, time
marks = [time.perf_counter()]
import torch
marks.append(time.perf_counter())
import transformers
marks.append(time.perf_counter())
transformers.Siglip2VisionModel
marks.append(time.perf_counter())
import lancedb
marks.append(time.perf_counter())
print(json.dumps([round(b - a, 3) for a, b in zip(marks, marks[1:])]))
"""
PARTS = ("torch", "transformers", "siglip2_model_class", "lancedb")


def one_run() -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
    return dict(zip(PARTS, json.loads(out.strip().splitlines()[-1]), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps({"machine": machine(), "runs": [one_run() for _ in range(args.runs)]}, indent=1))


if __name__ == "__main__":
    main()
