#!/usr/bin/env bash
# The one prepared GPU check, under 9 minutes on one H100/H200, for a session lent a GPU:
#   bash benchmarks/gpu.sh [OUT_DIR] [gpu_trainer.py options]     (OUT_DIR default: $OUT, else .)
# 1. benchmarks/gpu_trainer.py: the real trainer (twostage.train) on the paper profile, 200 steps
#    eager and 200 with run.cuda_graph from one seed; per-step losses compared (exit 1 on a
#    mismatch), step time and MFU of both -> OUT/gpu-trainer.{json,md} and the metrics.csv files.
# 2. Only with GPU_BENCH_STANDALONE=1: benchmarks/gpu.py, the trainer's step (make_step) in
#    more variants (<= 150 s) -> OUT/gpu-bench.json.
# Uses the machine's own python3 (torch, scikit-image) with our sources on PYTHONPATH; no
# network. Modules the trainer needs beyond those are installed offline, into a temporary
# folder, from benchmarks/wheels/ when it exists (`make gpu-wheels` fills it here; carry it to the
# GPU machine); otherwise they are named and it exits 3 at once.
# CPU smoke test (tests/test_benchmarks.py): OUT=dir bash benchmarks/gpu.sh --device cpu --tiny --steps 2
set -euo pipefail
out="${OUT:-.}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out="$1"; shift; fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"  # the caller's folder, before the cd below
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

missing() {
  "$py" - <<'EOF'
import importlib.util
need = {"numpy": "numpy", "scipy": "scipy", "PIL": "pillow", "tifffile": "tifffile",
        "png": "pypng", "yaml": "pyyaml", "tqdm": "tqdm", "safetensors": "safetensors"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
}
lack="$(missing)"
if [ -n "$lack" ] && [ -d benchmarks/wheels ]; then
  site="$(mktemp -d)"
  # shellcheck disable=SC2086
  "$py" -m pip install -q --no-index --no-deps --find-links benchmarks/wheels --target "$site" $lack
  export PYTHONPATH="$PYTHONPATH:$site"
  lack="$(missing)"
fi
if [ -n "$lack" ]; then
  echo "gpu.sh: $py lacks: $lack (no network here: put their wheels in benchmarks/wheels/)" >&2
  exit 3
fi
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv \
    | tee "$out/nvidia-smi.csv"
fi
status=0
timeout "${GPU_TRAINER_TIMEOUT:-360}" "$py" benchmarks/gpu_trainer.py --out "$out" "$@" 2>&1 \
  | tee "$out/gpu-trainer.log" || status=$?
if [ "${GPU_BENCH_STANDALONE:-0}" = 1 ]; then
  timeout 150 "$py" benchmarks/gpu.py --budget-s 120 --json "$out/gpu-bench.json" 2>&1 \
    | tee "$out/gpu-bench.log" || true
fi
exit "$status"
