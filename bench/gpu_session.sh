#!/usr/bin/env bash
# The GPU checks issue 14 still owes, as one prepared script for a session with the H200 (~9 min):
#   1. the hard synthetic data's noise level (ResNet-18 at 80-90 % test accuracy)
#   2. bench/gpu.py end to end, 3 times (median; stage times, peak memory, model-images/s vs peak,
#      and the bf16 table on the hard data from the full run)
#   3. digits-quick on the GPU with and without the CUDA warm-up (bench/coldstart.py): against the CPU
#   4. the bf16 table on digits-quick and mnist1d-cnn runs made on the GPU
#
#   bash bench/gpu_session.sh [OUT_DIR [GROUP ...]]   # logs and JSON into OUT_DIR (default: $OUT, else bench/h200/owed)
#   DRY=1 bash bench/gpu_session.sh /tmp/owed         # the same steps at tiny sizes on the CPU (checks the script)
# GROUPs: calibrate gpu coldstart bf16 (default: all). One device call may run 10 minutes at most, so a
# session can split them: `... "$OUT" calibrate gpu` (~6 min), then `... "$OUT" coldstart bf16` (~3 min).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/h200/owed}}
shift $(( $# > 0 ? 1 : 0 ))
groups=" ${*:-calibrate gpu coldstart bf16} "
want() { [[ $groups == *" $1 "* ]]; }
mkdir -p "$out"
dry=${DRY:-}
gpu=(${dry:+--dry-run})
dev=${dry:+cpu}; dev=${dev:-cuda}
quick=${dry:+tiny}; quick=${quick:-digits-quick}
m1d=${dry:+tiny}; m1d=${m1d:-mnist1d-cnn}
levels=(2 2.5 3); [ -n "$dry" ] && levels=(2.5)
scale=1; [ -n "$dry" ] && scale=10       # the CPU is far slower: the dry run only checks the steps work
export PDIFF_RUNS_DIR=$out/runs

step() {   # step NAME SECONDS COMMAND...: its output in OUT/NAME.log, a one-line summary here
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout $((limit * scale)) "$@" > "$out/$name.log" 2>&1
  echo "== $name: rc=$? in $((SECONDS - t0)) s; $(grep -v '^\s*$' "$out/$name.log" | tail -1)"
}

noise=2.5       # the default, unless calibration below picks a level
if want calibrate; then
  step calibrate 240 python bench/gpu.py "${gpu[@]}" --calibrate "${levels[@]}"
  # the level whose accuracy is nearest 85 %
  noise=$(python - "$out/calibrate.log" <<'PY'
import re, sys
rows = [(abs(float(a) - 85), n) for n, a in re.findall(r"noise ([\d.]+): ResNet-18 test accuracy ([\d.]+) %", open(sys.argv[1]).read())]
print(min(rows)[1] if rows else "2.5")
PY
)
  echo "$noise" > "$out/noise.txt"
fi
[ -f "$out/noise.txt" ] && noise=$(cat "$out/noise.txt")
if want gpu; then
  echo "   noise for the GPU check: $noise"
  step gpu-1 180 python bench/gpu.py "${gpu[@]}" --noise "$noise" --no-variants --out "$out/gpu-1.json"
  step gpu-2 100 python bench/gpu.py "${gpu[@]}" --noise "$noise" --pipeline-only --out "$out/gpu-2.json"
  step gpu-3 100 python bench/gpu.py "${gpu[@]}" --noise "$noise" --pipeline-only --out "$out/gpu-3.json"
  python - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
t = [json.loads(p.read_text())["total"] for p in sorted(Path(sys.argv[1]).glob("gpu-[123].json"))]
print(f"   gpu.py end to end: {', '.join(f'{x:.1f}' for x in t)} s; median {statistics.median(t):.1f} s" if t else "   no gpu.py totals")
PY
fi
if want coldstart; then
  step coldstart 200 python bench/coldstart.py --device "$dev" --preset "$quick" --pairs 2
fi
if want bf16; then
  rm -rf "$PDIFF_RUNS_DIR/g-digits" "$PDIFF_RUNS_DIR/g-mnist1d"
  step run-digits 90 python -m pdiff_core run --preset "$quick" --device "$dev" --run-id g-digits --quiet
  step run-mnist1d 150 python -m pdiff_core run --preset "$m1d" --device "$dev" --run-id g-mnist1d --quiet
  step bf16 120 python bench/bf16.py g-digits g-mnist1d --device "$dev"
fi
