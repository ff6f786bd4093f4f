"""The command line of `benchmarks/run.py`: choose sections, measure them, store, render."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from twostage.ops.files import write_text_atomic

from . import nets
from .harness import (
    CPU_JSON,
    ROOT,
    Context,
    gemm_gflops,
    load_snapshot,
    machine,
    read_results,
    wait_for_quiet,
)
from .report import render
from .sections import BY_NAME, SECTIONS

NAMES = [s.name for s in SECTIONS]


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write", type=Path, help="render BENCHMARKS.md here")
    parser.add_argument("--only", help=f"comma-separated sections: {','.join(NAMES)}")
    parser.add_argument("--skip-demo", action="store_true", help="leave the (minutes) demo out")
    parser.add_argument("--render-only", action="store_true", help="measure nothing")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs, small workloads")
    parser.add_argument(
        "--paper-repeats",
        type=int,
        default=3,
        help="timed runs of the paper-size train steps (several s each)",
    )
    parser.add_argument("--infer-size", type=int, default=256, help="inference input side")
    parser.add_argument(
        "--tiles",
        default="128",
        help="comma-separated --tile values ('none' = whole image) for the tiled section",
    )
    parser.add_argument("--big", action="store_true", help="tiled: also 4080×2712 output")
    parser.add_argument(
        "--bundles",
        type=Path,
        default=ROOT / "runs" / "demo" / "bundles",
        help="precision: the demo's bundles whose quality is compared (default runs/demo/bundles)",
    )
    parser.add_argument(
        "--demo-runs",
        default="quick,full",
        help="which demos the demo section times: quick, full or both",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each section wait for a quiet machine, at most S "
        "seconds in all; then measure anyway (the load is recorded)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help=f"results file (default {CPU_JSON.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check this script in seconds: tiny presets, 1 run, 32² images; "
        "results go to --json (default: a temporary file), never cpu.json",
    )
    return parser


def _settle(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--smoke's tiny presets and sizes, the results file, the list options split."""
    if args.smoke:
        nets.SMOKE_PRESETS.update(
            {"rcan-paper": "rcan-tiny", "rcan-cpu": "rcan-tiny", "edsr-cpu": "edsr-tiny"}
        )
        args.repeats, args.paper_repeats, args.infer_size = 1, 1, 32
        if args.json is None:
            args.json = Path(tempfile.mkdtemp(prefix="bench-smoke-")) / "cpu.json"
    elif args.json is None:
        args.json = CPU_JSON
    args.tiles = [t.strip() for t in args.tiles.split(",") if t.strip()]
    args.demo_runs = [d.strip() for d in args.demo_runs.split(",") if d.strip()]
    if not args.demo_runs or set(args.demo_runs) - {"quick", "full"}:
        parser.error("--demo-runs takes quick, full or quick,full")


def _chosen(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The sections to measure, in order (gemm first when a ratio needs this run's peak)."""
    if args.only:
        chosen = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in chosen if s not in BY_NAME]
        if bad:
            parser.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(NAMES)}")
    else:
        chosen = list(NAMES)
    if args.skip_demo:
        chosen = [s for s in chosen if s != "demo"]
    if args.render_only:
        chosen = []
    if any(BY_NAME[s].needs_gemm for s in chosen) and "gemm" not in chosen:
        chosen.insert(0, "gemm")  # the ratios need this run's GEMM peak
    return chosen


def _measure(name: str, ctx: Context, command: str, here: dict[str, Any]) -> dict[str, Any]:
    """One section's stored record: its rows (or its error), the command, time and load."""
    section = BY_NAME[name]
    print(f"[{name}]", flush=True)
    sec: dict[str, Any] = {
        "command": command + ("" if ctx.args.only else f"  (section {name})"),
        "when": dt.datetime.now().isoformat(timespec="minutes"),
        "load_before": load_snapshot(),
        "cpu": f"{here['cpu']} ({', '.join(here['flags'])})",
    }
    start = time.perf_counter()
    try:
        if section.needs_gemm:  # this section's ratios use a GEMM peak measured just now
            ctx.gemm = sec["gemm_gflops"] = gemm_gflops(torch.float32)
        sec["rows"] = section.measure(ctx)
    except Exception as exc:  # one failed section must not lose the others
        sec["error"] = f"{type(exc).__name__}: {exc}"[:500]
        print(f"  failed: {sec['error']}", flush=True)
    sec["seconds"] = time.perf_counter() - start
    sec["load_after"] = {"loadavg": [round(v, 2) for v in os.getloadavg()]}
    return sec


def main(description: str) -> int:
    parser = build_parser(description)
    args = parser.parse_args()
    _settle(args, parser)
    chosen = _chosen(args, parser)
    results = read_results(args.json)
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:])
    ctx = Context(args=args)
    here = machine()
    if chosen and (not args.only or "machine" not in results):
        # A partial run keeps the header's machine; its sections name their own (below).
        results["machine"] = here
    if chosen:
        print(
            f"{here['cpu']}, torch {torch.__version__}, {torch.get_num_threads()} threads",
            flush=True,
        )
    deadline = time.monotonic() + args.wait_quiet
    for name in chosen:
        if args.wait_quiet > 0:
            wait_for_quiet(deadline)
        sec = results["sections"][name] = _measure(name, ctx, command, here)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")
        print(f"  done in {sec['seconds']:.0f} s", flush=True)
    if args.write:
        write_text_atomic(args.write, render(results))
        print(f"wrote {args.write}")
    return 0
