"""Decode workers x torch threads on this machine: `dedupd bench` once per combination, on the same generated photos
and the same random-weight SigLIP2-base checkpoint, each in its own process (torch's thread pool is per process).

usage: uv run python bench/tune_cpu.py [--images 32] [--batch-size 16] [--combos 1x2,0x2,2x2,1x1,2x1] [--repeat 2]
                                      [--folder DIR] [--knobs]

A combination WxT is W decode workers and T torch threads. --batch-size smaller than --images makes decode and the
model overlap in the end-to-end run, as they do on a real library. The first combination also runs the naive loop
(and the knobs with --knobs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import emit

from dedupd.bench import build_random_model, write_camera_jpegs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--combos", default="1x2,0x2,2x2,1x1,2x1")
    parser.add_argument("--folder", help="photos to use instead of generated ones")
    parser.add_argument("--knobs", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="rounds per combination (best is kept)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dedupd-tune-") as tmp_name:
        tmp = Path(tmp_name)
        folder = args.folder or str(tmp / "photos")
        if not args.folder:
            write_camera_jpegs(Path(folder), args.images)
        model = build_random_model("random:siglip2-base", tmp / "model")
        for i, combo in enumerate(args.combos.split(",")):
            workers, threads = (int(v) for v in combo.split("x"))
            cmd = [
                sys.executable,
                "-m",
                "dedupd",
                "bench",
                folder,
                "--model",
                str(model),
                "--images",
                str(args.images),
                "--batch-size",
                str(args.batch_size),
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--vectors",
                "0",
                "--json",
                "--repeat",
                str(args.repeat),
            ]
            if i > 0:
                cmd.append("--no-naive")
            elif args.knobs:
                cmd.append("--knobs")
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            result = json.loads(done.stdout)
            row = {
                "workers": workers,
                "threads": threads,
                **{
                    k: result.get(k)
                    for k in (
                        "decode_img_s",
                        "model_img_s",
                        "end_to_end_img_s",
                        "end_to_end_vs_model",
                        "naive_img_s",
                        "speedup_vs_naive",
                        "knobs",
                        "rounds_s",
                        "load_avg",
                    )
                },
            }
            rows.append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if v is not None})
            print(json.dumps(rows[-1]), file=sys.stderr)
    best_model = max(r["model_img_s"] for r in rows)
    for row in rows:
        row["end_to_end_vs_best_model"] = round(row["end_to_end_img_s"] / best_model, 3)
    emit(
        "tune_cpu",
        {
            "images": args.images,
            "batch_size": args.batch_size,
            "model": "random:siglip2-base",
            "source": args.folder or "generated 4000x3000 JPEGs",
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
