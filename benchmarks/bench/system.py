"""System sections: the GEMM peak (`gemm`), operator profiles (`profile`), threads on a busy
machine (`threads`) and the demo's wall time and memory (`demo`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .harness import ROOT, Context, Row, fmt, gemm_gflops, run_polled, table
from .inference import forward_step
from .nets import Variant, build, spec_of
from .train import train_step

# ============================================================================ measure


def section_gemm(ctx: Context) -> list[Row]:
    fp32 = gemm_gflops(torch.float32)
    bf16 = gemm_gflops(torch.bfloat16)
    ctx.gemm = fp32
    return [
        {"what": "torch.mm 2048² fp32", "gflops": fp32},
        {
            "what": "torch.mm 2048² bf16 (AMX when the CPU has it; for reference only)",
            "gflops": bf16,
        },
    ]


def section_profile(ctx: Context) -> list[Row]:
    """torch.profiler: top operators by self CPU time (train step, inference)."""
    from torch.profiler import ProfilerActivity, profile

    rows = []
    cases = [
        (
            "train",
            "rcan-paper",
            2,
            Variant(),
            "batch 8 of 48² (the op mix of 96², a quarter of the time)",
        ),
        ("train", "rcan-cpu", 2, Variant(), "batch 8 of 32² (the demo)"),
        ("inference", "rcan-paper", 2, Variant(channels_last=True), "one 192² image"),
    ]
    for mode, preset, scale, variant, note in cases:
        spec = spec_of(preset, scale)
        model = build(spec, reference=False)
        if mode == "train":
            patch = 48 if preset.endswith("paper") else 32
            fn = train_step(model, batch=8, patch=patch, variant=variant)
        else:
            fn = forward_step(model, size=192, variant=variant)
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        top = prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40
        )
        rows.append(
            {
                "mode": mode,
                "preset": preset,
                "scale": scale,
                "variant": variant.label,
                "note": note,
                "table": _trim_profile(top),
            }
        )
    return rows


def _trim_profile(table: str) -> str:
    """Keep the name, self CPU %, self CPU, CPU total and call-count columns."""
    lines = [ln for ln in table.splitlines() if ln.strip()]
    out = []
    for ln in lines:
        if set(ln.strip()) <= {"-", " "}:
            continue
        cells = [c for c in ln.split("  ") if c.strip()]
        if len(cells) >= 7:
            out.append(
                f"{cells[0].strip():<42}{cells[1].strip():>10}{cells[2].strip():>12}"
                f"{cells[4].strip():>12}{cells[-1].strip():>12}"
            )
        else:
            out.append(ln.strip())
    return "\n".join(out)


THREADS_CHILD = """
import statistics, sys
import torch
sys.path[:0] = sys.argv[3:]
from bench.harness import median_times
from bench.nets import Variant, build, spec_of
from bench.train import train_step
torch.set_num_threads(int(sys.argv[1]))
step = train_step(build(spec_of("rcan-cpu", 2), reference=False), batch=8, patch=32,
                  variant=Variant())
print(statistics.median(median_times({"s": step}, warmup=2, repeats=int(sys.argv[2]))["s"]))
"""


def section_threads(ctx: Context) -> list[Row]:
    """The rcan-cpu ×2 train step with 2 threads (OMP_WAIT_POLICY PASSIVE / ACTIVE) and 1
    thread, alone and with one core taken by a spinning process (a busy machine)."""
    rows = []
    paths = [str(ROOT / "src"), str(ROOT / "benchmarks")]
    for hog in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if hog else None
        try:
            for threads, policy in ((2, "PASSIVE"), (2, "ACTIVE"), (1, "PASSIVE")):
                env = {**os.environ, "OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(threads)}
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        THREADS_CHILD,
                        str(threads),
                        str(ctx.args.repeats + 5),
                        *paths,
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                sec = float(out.stdout.strip().splitlines()[-1])
                rows.append(
                    {
                        "threads": threads,
                        "policy": policy,
                        "busy_core": hog,
                        "seconds": sec,
                        "repeats": ctx.args.repeats + 5,
                    }
                )
                print(f"  {threads} thread(s), {policy}, spinner={hog}: {sec:.3f} s", flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    return rows


def section_demo(ctx: Context) -> list[Row]:
    exe = str(Path(sys.executable).with_name("twostage"))
    rows = []
    for quick in [v == "quick" for v in ctx.args.demo_runs]:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [exe, "demo", "--out", tmp] + (["--quick"] if quick else [])
            print(f"  {'twostage demo --quick' if quick else 'twostage demo'}", flush=True)
            wall, peak, _ = run_polled(cmd)
            rows.append(
                {
                    "command": "twostage demo --out DIR" + (" --quick" if quick else ""),
                    "seconds": wall,
                    "peak_rss_gib": peak / 2**30,
                }
            )
    return rows


# ============================================================================ render


def render_gemm(rows: list[Row]) -> list[str]:
    return table(["operation", "GFLOP/s"], [[r["what"], f"{r['gflops']:.0f}"] for r in rows])


def render_threads(rows: list[Row]) -> list[str]:
    alone = {(r["threads"], r["policy"]): r["seconds"] for r in rows if not r["busy_core"]}
    return [
        "rcan-cpu ×2 train step (batch 8 of 32²) in a fresh process per row; 'one core "
        "busy' = a second process spinning in a Python loop meanwhile.",
        "",
        *table(
            ["threads", "OMP_WAIT_POLICY", "other load", "s/iter", "vs same set-up alone", "runs"],
            [
                [
                    str(r["threads"]),
                    r["policy"],
                    "one core busy" if r["busy_core"] else "none",
                    fmt(r["seconds"], ".3f"),
                    fmt(r["seconds"] / alone[(r["threads"], r["policy"])], ".2f", "× slower")
                    if r["busy_core"] and (r["threads"], r["policy"]) in alone
                    else "–",
                    str(r["repeats"]),
                ]
                for r in rows
            ],
        ),
    ]


def render_demo(rows: list[Row]) -> list[str]:
    return table(
        ["command", "wall (min)", "peak RSS (GiB)"],
        [
            [f"`{r['command']}`", fmt(r["seconds"] / 60, ".1f"), fmt(r["peak_rss_gib"], ".2f")]
            for r in rows
        ],
    )


def render_profile(rows: list[Row]) -> list[str]:
    out: list[str] = []
    for r in rows:
        out += [
            f"**{r['mode']} {r['preset']} ×{r['scale']}, {r['variant']}** ({r['note']}): "
            "top operators by self CPU time.",
            "",
            "```",
            r["table"],
            "```",
            "",
        ]
    return out
