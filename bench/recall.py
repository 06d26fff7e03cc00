"""Recall and precision of a report against a labelled set: files whose names start with the same number
(`07_pixels-l.webp`, `07_pixels-l_half_q85.jpg`, ...) are one picture, all others are different pictures.

recall    = duplicates whose keeper is the same picture / (files of each picture - 1, summed): what a purge could
            reclaim of what there is to reclaim;
precision = duplicates whose keeper is the same picture / all duplicates: a duplicate kept for another picture is a
            picture a purge would lose.

usage: uv run python bench/recall.py REPORT [--label-regex '^(\\d+)_'] [--total N]
       (--total: files in the set, when some were never grouped; default: every file the report names)
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter


def label(path: str, pattern: re.Pattern[str]) -> str:
    match = pattern.match(os.path.basename(path))
    return match.group(1) if match else path


def measure(report: dict, pattern: re.Pattern[str], files: list[str]) -> dict:
    sizes = Counter(label(p, pattern) for p in files)
    reclaimable = sum(n - 1 for n in sizes.values())
    duplicates = [(g["keep"], d) for g in report["groups"] for d in g["duplicates"]]
    right = sum(1 for keep, dup in duplicates if label(keep, pattern) == label(dup, pattern))
    return {
        "recall": round(right / reclaimable, 4) if reclaimable else None,
        "precision": round(right / len(duplicates), 4) if duplicates else None,
        "duplicates": len(duplicates),
        "correct": right,
        "reclaimable": reclaimable,
        "groups": len(report["groups"]),
        "similar": sum(len(g["similar"]) for g in report["groups"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--label-regex", default=r"^(\d+)_")
    parser.add_argument("--root", help="the labelled folder (default: the report's roots): every image counts")
    args = parser.parse_args()
    with open(args.report, "rb") as handle:
        report = json.load(handle)
    roots = [args.root] if args.root else report.get("roots", [])
    files = [os.path.join(d, n) for r in roots for d, _, names in os.walk(r) for n in names if not n.endswith(".json")]
    measured = measure(report, re.compile(args.label_regex), files)
    result = {"report": args.report, "threshold": report.get("threshold"), **measured}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
