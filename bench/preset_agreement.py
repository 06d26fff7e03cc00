"""Does the fast preset still group resizes and re-encodes? Both settings on the same real photos and their copies.

usage: uv run python bench/preset_agreement.py ORIGINALS VARIANTS --model M [--threshold 0.985]

A file in VARIANTS belongs to the original in ORIGINALS whose name (without extension) starts its own name
(`07_pixels-l.webp` -> `07_pixels-l_half_q85.jpg`). For the default settings and the fast preset it prints: the
cosine between the two settings' vectors of each file, the share of (original, variant) pairs at or above the
threshold (what a scan groups), the lowest such cosine, and the pairs of different originals at or above it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from dedupd.bench import BenchSettings, decode_all, embed_fn, load_bench_embedder, warm_pool, with_core_split


def _files(folder: str) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file())


def _vectors(paths: list[Path], model: str, preset: str) -> np.ndarray:
    settings = with_core_split(BenchSettings(model=model, preset=preset, device="auto", naive=False, vectors=0))
    embedder = load_bench_embedder(model, settings)
    spec = embedder.preprocess_spec
    with warm_pool(settings.workers or 1) as pool:
        items, _ = decode_all([os.fsencode(p) for p in paths], pool, embedder.draft_side, 150_000_000, spec)
    embed = embed_fn(embedder, spec)
    out = np.concatenate([embed(items[i : i + 16]) for i in range(0, len(items), 16)])
    embedder.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("originals")
    parser.add_argument("variants")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threshold", type=float, default=0.985)
    args = parser.parse_args()
    originals, variants = _files(args.originals), _files(args.variants)
    owner = {}
    for v in variants:
        matches = [i for i, o in enumerate(originals) if v.stem.startswith(o.stem + "_")]
        if len(matches) != 1:
            print(f"{v.name}: no single original", file=sys.stderr)
            return 2
        owner[v] = matches[0]
    paths = originals + variants
    result: dict = {"originals": len(originals), "variants": len(variants), "threshold": args.threshold}
    vectors = {preset: _vectors(paths, args.model, preset) for preset in ("default", "fast")}
    agreement = np.sum(vectors["default"] * vectors["fast"], axis=1)
    result["fast_vs_default_cosine"] = {"mean": float(agreement.mean()), "min": float(agreement.min())}
    n = len(originals)
    for preset, vec in vectors.items():
        pair_cos = np.array([vec[n + j] @ vec[owner[v]] for j, v in enumerate(variants)])
        between = vec[:n] @ vec[:n].T
        false = int(np.sum(np.triu(between >= args.threshold, k=1)))
        result[preset] = {
            "variant_pairs_grouped": float(np.mean(pair_cos >= args.threshold)),
            "variant_cosine_min": float(pair_cos.min()),
            "variant_cosine_mean": float(pair_cos.mean()),
            "different_originals_above_threshold": false,
            "different_originals_cosine_max": float(np.max(between - 2 * np.eye(n))),
        }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
