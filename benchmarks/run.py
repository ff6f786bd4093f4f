"""CPU benchmarks of twostage against the reference RCAN and this machine's GEMM limit.

    python benchmarks/run.py --write BENCHMARKS.md            # everything (`make bench`)
    python benchmarks/run.py --only gemm,train --write BENCHMARKS.md
    python benchmarks/run.py --skip-demo --wait-quiet 1200 --write BENCHMARKS.md
    python benchmarks/run.py --render-only --write BENCHMARKS.md

Each section's rows are stored in benchmarks/results/cpu.json (a run of some sections keeps the
others' earlier rows, with the command and machine load that made them); BENCHMARKS.md is
rendered from that file, benchmarks/results/gpu-*.json and benchmarks/notes.md.

Timing: a median over repeats after warm-up iterations; ours and the reference are timed
alternately (ours, reference, ours, …) in the same process with the same threads, so a change
of machine load hits both alike. FLOPs are counted from the convolutions
(`twostage.models.conv_macs`): forward = 2 × MACs, a training step = 3 × forward (the backward
pass costs two forward passes: gradients of inputs and of weights).

The code is the package benchmarks/bench/: `bench.harness` (timing, machine facts, results),
one module per area (`bench.train`, `bench.inference`, `bench.data`, `bench.system`), the one
list of sections (`bench.sections.SECTIONS`), the targets table (`bench.targets.TARGETS`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# OpenMP reads this when torch loads it: waiting threads sleep instead of spinning, which keeps
# 2 threads from slowing down 8-10x when another process wants a core (the Makefile exports it
# too; an explicit setting in the environment wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(__doc__.splitlines()[0]))
