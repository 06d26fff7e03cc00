#!/bin/bash
# The overhead of `dedupd scan --ray local` against the local path, in turns, each into a new store; with a third
# argument, the same `--ray local` from another checkout (its own .venv) too, to compare two versions of the stage.
#   bench/ray_overhead.sh PHOTOS MODEL [OTHER_CHECKOUT] [TURNS]
# Prints one line a run: wall time, load before and after, groups found. Run it from the repository root.
set -u
photos=$1 model=$2 other=${3:-} turns=${4:-2}
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {  # LABEL CHECKOUT [scan flags...]
  local label=$1 checkout=$2
  shift 2
  rm -rf "$work/store"
  local start load0 rc
  start=$(date +%s.%N) load0=$(cut -d' ' -f1 /proc/loadavg)
  "$checkout/.venv/bin/dedupd" scan "$photos" --model "$model" --store "$work/store" --report "$work/$label.json" "$@" \
    >"$work/$label.log" 2>&1
  rc=$?
  printf '%-12s rc=%s wall=%.1f s load %s -> %s groups=%s\n' "$label" "$rc" \
    "$(echo "$(date +%s.%N) - $start" | bc)" "$load0" "$(cut -d' ' -f1 /proc/loadavg)" \
    "$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['groups']))" "$work/$label.json")"
}

for _ in $(seq "$turns"); do
  [ -n "$other" ] && run other-ray "$other" --ray local
  run ray "$PWD" --ray local
  run local "$PWD"
done
