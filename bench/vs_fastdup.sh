#!/usr/bin/env bash
# fastdup against dedupd's fast preset on the same photos, in turns, so load from elsewhere touches both alike.
# fastdup comes from PyPI into its own venv (FASTDUP_VENV, created on first use): it is never a dependency of dedupd.
#
# usage: bash bench/vs_fastdup.sh PHOTOS MODEL [ROUNDS]     (MODEL: a checkpoint folder, e.g. one that
#        dedupd.bench.build_random_model wrote; the same one for every round)
# Prints, per round: fastdup's whole process, `dedupd scan --preset fast`'s whole process (fresh store each time), and
# `dedupd bench --preset fast` (model loaded and workers started first, as issue 12 measured dedupd).
set -euo pipefail
photos=${1:?usage: vs_fastdup.sh PHOTOS MODEL [ROUNDS]}
model=${2:?usage: vs_fastdup.sh PHOTOS MODEL [ROUNDS]}
rounds=${3:-2}
venv=${FASTDUP_VENV:-/tmp/fastdup-venv}
cd "$(dirname "$0")/.."

if [ ! -x "$venv/bin/python" ]; then
  uv venv -q "$venv" --python 3.11
  VIRTUAL_ENV="$venv" uv pip install -q fastdup
fi
count=$(find "$photos" -type f | wc -l)
echo "photos: $count in $photos; $(grep -m1 'model name' /proc/cpuinfo); fastdup $("$venv/bin/python" -c 'import fastdup; print(fastdup.__version__)' 2>/dev/null)"

for round in $(seq "$rounds"); do
  work=$(mktemp -d)
  echo "round $round, load $(cut -d' ' -f1 /proc/loadavg)"
  /usr/bin/time -f "  fastdup whole process: %e s" "$venv/bin/python" -c \
    'import sys, fastdup; fastdup.create(work_dir=sys.argv[1], input_dir=sys.argv[2]).run(overwrite=True)' \
    "$work/fastdup" "$photos" > "$work/fastdup.log" 2>&1 || { tail -5 "$work/fastdup.log"; exit 1; }
  tail -1 "$work/fastdup.log"
  /usr/bin/time -f "  dedupd scan --preset fast whole process: %e s" uv run dedupd scan "$photos" --preset fast \
    --model "$model" --store "$work/store" --report "$work/report.json" > "$work/scan.log" 2>&1 \
    || { tail -5 "$work/scan.log"; exit 1; }
  tail -1 "$work/scan.log"
  uv run dedupd bench "$photos" --preset fast --model "$model" --no-naive --vectors 0 --json --repeat 2 \
    2> "$work/bench.log" | python3 -c 'import json, sys; r = json.load(sys.stdin); print(
      "  dedupd bench --preset fast: end to end %.2f img/s, model only %.2f, %d images, %s, %s patches"
      % (r["end_to_end_img_s"], r["model_img_s"], r["images"], r["precision"], r["max_patches"]))'
  rm -rf "$work"
done
echo "load at the end $(cut -d' ' -f1 /proc/loadavg)"
