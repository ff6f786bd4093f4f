#!/usr/bin/env bash
# One short prepared GPU benchmark (<= 5 minutes) for an H100/H200 machine.
# Usage (repository root):  bash benchmarks/gpu.sh [OUT_DIR]
# Uses the machine's own python3 with PyTorch; our package is pure Python (PYTHONPATH=src).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-.}}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$out/nvidia-smi.csv"
export PYTHONUNBUFFERED=1 PYTHONPATH=src
timeout "${GPU_BENCH_TIMEOUT:-420}" python3 benchmarks/gpu.py --json "$out/gpu-bench.json" 2>&1 | tee "$out/gpu-bench.log"
