"""fp32, bf16 and int8 side by side on this CPU: model-only img/s on the same inputs, in turns.

    uv run python bench/precision_speed.py FOLDER --model M [--patches 256 64] [--rounds 2] [--threads 2]

Which precision the fast preset should take on a CPU (apply_preset in daemon/model/settings.py) is decided by this
measurement: bf16 is forced on even where `auto` would not pick it, so the three can be compared on any CPU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from _common import emit

from dedupd.bench import decode_all, embed_fn, time_model
from dedupd.model.runtime import build_embedder
from dedupd.model.settings import EmbedderSettings

KINDS = (("fp32", False, "auto"), ("bf16", True, "auto"), ("int8", False, "int8"))


def rates(paths: list[bytes], model: str, patches: int, threads: int, rounds: int) -> dict[str, list[float]]:
    loaded = {}
    for name, bf16, precision in KINDS:
        settings = EmbedderSettings(model, device="cpu", threads=threads, max_patches=patches, precision=precision)
        embedder = build_embedder(settings, ["cpu"], cpu_bf16=bf16)
        items, _ = decode_all(paths, None, embedder.draft_side, 100_000_000, embedder.preprocess_spec)
        loaded[name] = (embedder, items)
    out: dict[str, list[float]] = {name: [] for name in loaded}
    for _ in range(rounds):  # in turns, so load from elsewhere touches all three alike
        for name, (embedder, items) in loaded.items():
            _, seconds, _ = time_model(embed_fn(embedder, embedder.preprocess_spec), items, embedder.batch_items)
            out[name].append(round(len(items) / seconds, 2))
    for embedder, _ in loaded.values():
        embedder.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--patches", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    # Any case: cameras name their files IMG_0001.JPG.
    paths = sorted(os.fsencode(p) for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        parser.error(f"no JPEG files in {args.folder}")
    result = {str(p): rates(paths, args.model, p, args.threads, args.rounds) for p in args.patches}
    emit("precision_speed", {"images": len(paths), "threads": args.threads, "img_s": result})


if __name__ == "__main__":
    main()
