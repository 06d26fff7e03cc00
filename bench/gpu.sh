#!/usr/bin/env bash
# The GPU checks, prepared as one short run for a lent NVIDIA machine (no network there, and a carry limit of
# 64 MiB, so lancedb's 75 MB wheel cannot travel: the end-to-end figure there is `dedupd bench --no-store`).
#
#   bash bench/gpu.sh fetch     # here: the wheels the GPU image lacks, into .whl/ (ignored by git; ~9 MB)
#   bash bench/gpu.sh run       # there, from the repository root, with .whl carried; figures land in $OUT
#
# The image there has python3 with torch, transformers, safetensors, pyarrow, Pillow, numpy, pyyaml, tqdm and
# pytest; it lacks pydantic, platformdirs, watchdog, pillow-heif and faiss-cpu. Written before any GPU was lent
# to this project: the first session that runs it should expect to fix small things.
set -euo pipefail
cd "$(dirname "$0")/.."

fetch() {
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    pydantic pydantic-core annotated-types typing-inspection platformdirs watchdog pillow-heif faiss-cpu
  du -sh .whl
}

run() {
  : "${OUT:?set OUT to the folder the figures go to}"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  # dedupd without installing it: the package is daemon/, and dedupd.store is store/.
  mkdir -p /tmp/pkg && ln -sfn "$PWD/daemon" /tmp/pkg/dedupd && ln -sfn "$PWD/store" daemon/store
  export PYTHONPATH=/tmp/pkg:/tmp/site HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
  { nvidia-smi; nproc; python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)'; } \
    > "$OUT/machine.txt" 2>&1
  # The CUDA paths of the embedder (bf16/fp16, flash/SDPA, pinned copies, OOM halving) on the tiny model.
  timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_embedder.py tests/test_preprocess.py \
    > "$OUT/tests.txt" 2>&1 || true
  # Throughput: SigLIP2-base architecture (random weights), generated camera-like 12 MP JPEGs, all cores decoding.
  timeout 300 python3 -m dedupd bench --model random:siglip2-base --images 512 --no-store --vectors 100000 --json \
    > "$OUT/bench-gpu.json" 2> "$OUT/bench-gpu.log" || true
  # The naive loop on the same machine, for the 3.5x ratio (fewer images: it is slow by design).
  timeout 240 python3 -m dedupd bench --model random:siglip2-base --images 128 --no-store --vectors 0 --json \
    > "$OUT/bench-naive.json" 2> "$OUT/bench-naive.log" || true
}

"${1:?usage: bench/gpu.sh fetch|run}"
