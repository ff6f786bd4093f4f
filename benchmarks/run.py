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
"""

from __future__ import annotations

import os

# OpenMP reads this when torch loads it: waiting threads sleep instead of spinning, which keeps
# 2 threads from slowing down 8-10x when another process wants a core (the Makefile exports it
# too; an explicit setting in the environment wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import datetime as dt
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import ReferenceRCAN  # noqa: E402

from twostage.models import build_model, conv_macs, preset_spec  # noqa: E402
from twostage.models.common import ModelSpec  # noqa: E402
from twostage.ops.files import write_text_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CPU_JSON = RESULTS / "cpu.json"
NOTES = ROOT / "benchmarks" / "notes.md"
SECTIONS = (
    "gemm",
    "train",
    "variants",
    "infer",
    "pipeline",
    "precision",
    "compile",
    "data",
    "degrade",
    "tiled",
    "profile",
    "threads",
    "demo",
)
NEEDS_GEMM = {"train", "variants", "infer", "pipeline", "compile"}
Step = Callable[[], object]


# ============================================================================ timing, machine


def median_times(fns: dict[str, Step], *, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function, called round-robin (`warmup` untimed rounds first)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [
                    f
                    for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                    if f in flags
                ]
    return []


def machine() -> dict[str, Any]:
    onednn = torch.backends.mkldnn.is_available()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "flags": cpu_flags(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onednn": onednn,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
    }


def other_busy_processes() -> list[str]:
    """Other processes using over a fifth of a core (sampled for 1 s): who shares the CPU."""
    me = os.getpid()
    procs = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] == me:
            continue
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
            procs.append(p)
    time.sleep(1.0)
    busy = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            pct = p.cpu_percent(None)
            if pct > 20:
                cmd = " ".join(" ".join(p.info["cmdline"] or []).split())[:80]
                busy.append(f"{pct:.0f}% {cmd}")
    return busy


def load_snapshot() -> dict[str, Any]:
    return {"loadavg": [round(v, 2) for v in os.getloadavg()], "others": other_busy_processes()}


def wait_for_quiet(deadline: float) -> None:
    """Poll every 60 s, until `deadline` (time.monotonic), for no other process to use a core."""
    while True:
        busy = other_busy_processes()
        if not busy or time.monotonic() >= deadline:
            if busy:
                print(f"  machine still busy after waiting: {busy}", flush=True)
            return
        print(f"  waiting for a quiet machine: {busy}", flush=True)
        time.sleep(min(60.0, max(1.0, deadline - time.monotonic())))


# ============================================================================ workloads


def gemm_gflops(dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """`torch.mm` of two n×n matrices: median of 7 after 3 warm-ups."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    times = median_times({"mm": lambda: torch.mm(a, b)}, warmup=3, repeats=7)["mm"]
    return 2 * n**3 / statistics.median(times) / 1e9


# --smoke (a check of this script, seconds): every preset becomes a tiny one.
SMOKE_PRESETS: dict[str, str] = {}


def spec_of(preset: str, scale: int) -> ModelSpec:
    return preset_spec(SMOKE_PRESETS.get(preset, preset), scale=scale)


def build(spec: ModelSpec, *, reference: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if reference:
        return ReferenceRCAN(
            scale=spec.scale,
            n_resgroups=spec.n_resgroups,
            n_resblocks=spec.n_resblocks,
            n_feats=spec.n_feats,
            reduction=spec.reduction,
        )
    return build_model(spec)


@dataclass(frozen=True)
class Variant:
    """How a network is run: memory format, bf16 autocast, torch.compile."""

    channels_last: bool = False
    bf16: bool = False  # torch.autocast bf16: activations in bf16
    bf32: bool = False  # oneDNN fp32 convs with bf16 multiplicands (AMX), fp32 activations
    compile: bool = False
    fused_adam: bool = False

    @property
    def label(self) -> str:
        parts = ["channels_last" if self.channels_last else "contiguous"]
        if self.bf16:
            parts.append("bf16 autocast")
        if self.bf32:
            parts.append("bf32 convs")
        if self.fused_adam:
            parts.append("fused Adam")
        if self.compile:
            parts.append("compile")
        return " + ".join(parts)


@contextlib.contextmanager
def conv_math(variant: Variant) -> Iterator[None]:
    """bf32: oneDNN computes fp32 convolutions from bf16-rounded inputs and weights with fp32
    accumulation (AMX on CPUs that have it); everything else stays fp32."""
    if not variant.bf32:
        yield
        return
    conv = torch.backends.mkldnn.conv  # type: ignore[attr-defined]
    before = conv.fp32_precision
    conv.fp32_precision = "bf16"
    try:
        yield
    finally:
        conv.fp32_precision = before


def train_step(
    model: nn.Module, *, batch: int, patch: int, variant: Variant, seed: int = 0
) -> Step:
    """One Adam (β = 0.9/0.99, ε = 1e-8) + L1 step on a fixed random batch."""
    scale = model.scale
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = model.train().to(memory_format=memory_format)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, patch, patch, generator=g).contiguous(memory_format=memory_format)
    y = torch.rand(batch, 3, patch * scale, patch * scale, generator=g)
    opt = torch.optim.Adam(
        model.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8, fused=variant.fused_adam or None
    )
    net = torch.compile(model) if variant.compile else model

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with conv_math(variant), torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.bf16):
            out = net(x)
            F.l1_loss(out.float(), y).backward()
        opt.step()

    return step


def forward_step(model: nn.Module, *, size: int, variant: Variant, seed: int = 0) -> Step:
    """One inference forward pass on a 1×3×size×size input under inference_mode."""
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = model.eval().to(memory_format=memory_format)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    x = x.contiguous(memory_format=memory_format)
    net = torch.compile(model) if variant.compile else model

    def run() -> None:
        with (
            torch.inference_mode(),
            conv_math(variant),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.bf16),
        ):
            net(x)

    return run


def train_gflop(spec: ModelSpec, *, batch: int, patch: int) -> float:
    return 3 * 2 * conv_macs(spec, patch, patch) * batch / 1e9


# ============================================================================ sections


@dataclass
class Context:
    args: argparse.Namespace
    gemm: float | None = None  # fp32 GFLOP/s measured in this run


def section_gemm(ctx: Context) -> list[dict[str, Any]]:
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


@dataclass(frozen=True)
class TrainCase:
    preset: str
    scale: int
    batch: int
    patch: int
    note: str

    @property
    def big(self) -> bool:
        return self.preset.endswith("-paper")


TRAIN_CASES = (
    TrainCase("rcan-paper", 2, 8, 96, "the paper's ×2 (map2 / stage 2)"),
    TrainCase("rcan-paper", 1, 8, 96, "the paper's ×1 mapping network"),
    TrainCase("rcan-cpu", 2, 8, 32, "demo: map2 and stage-2 ×2 networks"),
    TrainCase("rcan-cpu", 4, 8, 32, "demo: direct-rcan ×4"),
    TrainCase("edsr-cpu", 4, 8, 32, "cpu profile's EDSR ×4 (not in the demo's branches)"),
)


def _repeats(ctx: Context, big: bool) -> tuple[int, int]:
    a = ctx.args
    return (1, a.paper_repeats) if big else (2, a.repeats)


def section_train(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for case in TRAIN_CASES:
        spec = spec_of(case.preset, case.scale)
        fns = {
            "ours": train_step(
                build(spec, reference=False), batch=case.batch, patch=case.patch, variant=Variant()
            )
        }
        if spec.arch == "rcan":
            fns["reference"] = train_step(
                build(spec, reference=True), batch=case.batch, patch=case.patch, variant=Variant()
            )
        warmup, repeats = _repeats(ctx, case.big)
        print(
            f"  train {case.preset} ×{case.scale} b{case.batch} p{case.patch}: "
            f"{warmup} warm-up + {repeats} timed",
            flush=True,
        )
        times = median_times(fns, warmup=warmup, repeats=repeats)
        gflop = train_gflop(spec, batch=case.batch, patch=case.patch)
        row = _speed_row(case.preset, case.scale, times, gflop, ctx.gemm, repeats=repeats)
        row.update(batch=case.batch, patch=case.patch, note=case.note, gflop=gflop)
        rows.append(row)
        del fns
    return rows


def _speed_row(
    preset: str,
    scale: int,
    times: dict[str, list[float]],
    gflop: float,
    gemm: float | None,
    *,
    repeats: int,
) -> dict[str, Any]:
    ours = statistics.median(times["ours"])
    row: dict[str, Any] = {
        "preset": preset,
        "scale": scale,
        "repeats": repeats,
        "seconds": ours,
        "times": times["ours"],
        "gflops": gflop / ours,
        "of_gemm": gflop / ours / gemm if gemm else None,
    }
    if "reference" in times:
        ref = statistics.median(times["reference"])
        row.update(ref_seconds=ref, ref_times=times["reference"], speedup=ref / ours)
    return row


# The cpu profile's trainer: channels_last and fused Adam, with and without `run.amp: bf16`.
TRAINER_FP32 = Variant(channels_last=True, fused_adam=True)
TRAINER_BF16 = Variant(channels_last=True, fused_adam=True, bf16=True)


def section_variants(ctx: Context) -> list[dict[str, Any]]:
    """Memory format / bf16 / compile for the train step (inference variants: `infer`)."""
    rows = []
    cl = Variant(channels_last=True)
    cases = [
        (
            TrainCase("rcan-cpu", 2, 8, 32, ""),
            [
                Variant(),
                cl,
                Variant(fused_adam=True),
                Variant(channels_last=True, fused_adam=True),
                Variant(channels_last=True, bf32=True),
                Variant(channels_last=True, bf16=True),
                TRAINER_BF16,
                Variant(compile=True),
            ],
        ),
        (TrainCase("rcan-cpu", 4, 8, 32, ""), [Variant(), cl]),
        (TrainCase("edsr-cpu", 4, 8, 32, ""), [Variant(), TRAINER_FP32, TRAINER_BF16]),
        (TrainCase("rcan-paper", 2, 8, 96, ""), [Variant(), cl]),
    ]
    for case, variants in cases:
        spec = spec_of(case.preset, case.scale)
        warmup, repeats = _repeats(ctx, case.big)
        fns = {}
        for v in variants:
            fns[v.label] = train_step(
                build(spec, reference=False), batch=case.batch, patch=case.patch, variant=v
            )
            if v.compile:  # compile happens on the first call: time it, then warm up
                start = time.perf_counter()
                fns[v.label]()
                rows.append(
                    {
                        "preset": case.preset,
                        "scale": case.scale,
                        "mode": "train",
                        "variant": v.label,
                        "compile_seconds": time.perf_counter() - start,
                    }
                )
        print(f"  train variants {case.preset} ×{case.scale}: {', '.join(fns)}", flush=True)
        times = median_times(fns, warmup=warmup, repeats=repeats)
        gflop = train_gflop(spec, batch=case.batch, patch=case.patch)
        base = statistics.median(times[Variant().label])
        for label, t in times.items():
            sec = statistics.median(t)
            rows.append(
                {
                    "preset": case.preset,
                    "scale": case.scale,
                    "mode": "train",
                    "batch": case.batch,
                    "patch": case.patch,
                    "variant": label,
                    "seconds": sec,
                    "times": t,
                    "gflops": gflop / sec,
                    "of_gemm": gflop / sec / ctx.gemm if ctx.gemm else None,
                    "vs_contiguous": base / sec,
                    "repeats": repeats,
                }
            )
        del fns
    return rows


def section_infer(ctx: Context) -> list[dict[str, Any]]:
    """rcan-paper ×2 on one size×size image: ours in several set-ups vs the reference."""
    size = ctx.args.infer_size
    spec = spec_of("rcan-paper", 2)
    plan = [
        ("ours", Variant()),
        ("ours", Variant(channels_last=True)),
        ("reference", Variant()),
        ("reference", Variant(channels_last=True)),
        ("ours", Variant(channels_last=True, bf32=True)),
        ("ours", Variant(channels_last=True, bf16=True)),
    ]
    fns = {
        f"{who}: {v.label}": forward_step(
            build(spec, reference=who == "reference"), size=size, variant=v
        )
        for who, v in plan
    }
    print(f"  inference rcan-paper ×2 {size}²: {len(fns)} set-ups", flush=True)
    times = median_times(fns, warmup=1, repeats=ctx.args.repeats)
    gflop = 2 * conv_macs(spec, size, size) / 1e9
    ref = statistics.median(times["reference: contiguous"])
    out_mp = (size * 2) ** 2 / 1e6
    rows = []
    for label, t in times.items():
        sec = statistics.median(t)
        rows.append(
            {
                "preset": "rcan-paper",
                "scale": 2,
                "size": size,
                "setup": label,
                "seconds": sec,
                "times": t,
                "mp_per_s": out_mp / sec,
                "gflops": gflop / sec,
                "of_gemm": gflop / sec / ctx.gemm if ctx.gemm else None,
                "vs_reference_eager": ref / sec,
                "repeats": ctx.args.repeats,
            }
        )
    return rows


def section_pipeline(ctx: Context) -> list[dict[str, Any]]:
    """map2 (rcan-paper ×2) + stage 2 (rcan-paper ×2) on one image: twostage.Pipeline as
    `twostage restore` runs it, and with channels_last, vs the same chain of reference nets
    (with the same 8-bit intermediate)."""
    from twostage.pipeline import Pipeline, quantize

    size = ctx.args.infer_size // 2
    spec = spec_of("rcan-paper", 2)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    ours = Pipeline(build(spec, reference=False, seed=1), build(spec, reference=False, seed=2))
    ours.eval()
    ours_cl = Pipeline(
        build(spec, reference=False, seed=1), build(spec, reference=False, seed=2)
    ).eval()
    ours_cl.to(memory_format=torch.channels_last)
    ref1 = build(spec, reference=True, seed=1).eval()
    ref2 = build(spec, reference=True, seed=2).eval()

    def run(pipe: nn.Module) -> Step:
        def go() -> None:
            with torch.inference_mode():
                pipe(x)

        return go

    def run_ref() -> None:
        with torch.inference_mode():
            ref2(quantize(ref1(x))).clamp(0, 1)

    fns = {
        "ours: Pipeline (as restore runs it)": run(ours),
        "ours: Pipeline, channels_last": run(ours_cl),
        "reference: contiguous": run_ref,
    }
    print(f"  pipeline map2 + ×2 on {size}²", flush=True)
    times = median_times(fns, warmup=1, repeats=ctx.args.repeats)
    gflop = 2 * (conv_macs(spec, size, size) + conv_macs(spec, 2 * size, 2 * size)) / 1e9
    out_mp = (4 * size) ** 2 / 1e6
    ref = statistics.median(times["reference: contiguous"])
    rows = []
    for label, t in times.items():
        sec = statistics.median(t)
        rows.append(
            {
                "size": size,
                "setup": label,
                "seconds": sec,
                "times": t,
                "mp_per_s": out_mp / sec,
                "gflops": gflop / sec,
                "of_gemm": gflop / sec / ctx.gemm if ctx.gemm else None,
                "vs_reference_eager": ref / sec,
                "repeats": ctx.args.repeats,
            }
        )
    return rows


PRECISION_MODES = ("fp32", "bf32", "bf16")


def _precision_speed(ctx: Context, preset: str) -> list[dict[str, Any]]:
    """`Pipeline.restore` of one image in each mode (as `twostage restore --precision` runs
    it: a loaded bundle, channels_last) against the fp32 reference RCAN on the same image."""
    from twostage.models.inference import resolve_precision
    from twostage.pipeline import Pipeline, load_pipeline

    size = ctx.args.infer_size
    spec = spec_of(preset, 2)
    auto = resolve_precision("auto", "cpu")
    rng = np.random.default_rng(0)
    img = np.kron(rng.random((size // 8, size // 8, 3)), np.ones((8, 8, 1))).astype(np.float32)
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
    ref = build(spec, reference=True, seed=1).eval()
    with tempfile.TemporaryDirectory() as tmp:
        Pipeline(None, build(spec, reference=False, seed=1)).save_bundle(
            Path(tmp) / "b.safetensors"
        )
        pipe = load_pipeline(Path(tmp) / "b.safetensors", precision="fp32")

    def ours(mode: str) -> Step:
        return lambda: pipe.restore(img, precision=mode)

    def reference() -> None:
        with torch.inference_mode():
            ref(x)

    fns: dict[str, Step] = {"reference: fp32": reference}
    fns.update({f"ours: restore --precision {m}": ours(m) for m in PRECISION_MODES})
    print(f"  precision {preset} ×2 {size}²: {', '.join(fns)}", flush=True)
    times = median_times(fns, warmup=1, repeats=ctx.args.repeats)
    base = statistics.median(times["reference: fp32"])
    fp32 = statistics.median(times["ours: restore --precision fp32"])
    return [
        {
            "kind": "speed",
            "preset": preset,
            "size": size,
            "setup": label,
            "auto": label.endswith(f" {auto.mode}"),
            "auto_reason": str(auto),
            "seconds": statistics.median(t),
            "times": t,
            "vs_reference": base / statistics.median(t),
            "vs_fp32": fp32 / statistics.median(t),
            "repeats": ctx.args.repeats,
        }
        for label, t in times.items()
    ]


def _precision_quality(bundles: Path) -> list[dict[str, Any]]:
    """Each bundle in `bundles` (the demo's), on the demo's test photos: PSNR against GT of
    the fp32 and the `auto` outputs, and PSNR of the `auto` output against the fp32 one."""
    from twostage.config import get_profile
    from twostage.data.splits import plan_data
    from twostage.ops.degrade import SUITE
    from twostage.ops.metrics import psnr
    from twostage.pipeline import Pipeline, load_pipeline
    from twostage.recipes import demo_recipe

    recipe = demo_recipe()
    _, test_sets = plan_data(recipe, {}, get_profile("cpu"), sr=True, track="unknown")
    test_sets = [t for t in test_sets if t.degradation not in SUITE]  # realistic, gaussian-aniso
    rows = []
    for path in sorted(bundles.glob("*.safetensors")):
        pipe = load_pipeline(path, precision="auto")
        assert isinstance(pipe, Pipeline)
        print(f"  quality {path.stem}: {pipe.precision}", flush=True)
        for test in test_sets:
            inputs = test.split.inputs(test.degradation, scale=recipe.scale)
            for name, x, hr in zip(test.split.names, inputs, test.split.hr):
                exact = pipe.restore(x, precision="fp32")
                fast = pipe.restore(x)
                crop = recipe.scale
                rows.append(
                    {
                        "kind": "quality",
                        "bundle": path.stem,
                        "test_set": test.name,
                        "image": name,
                        "mode": pipe.precision.mode,
                        "psnr_fp32": psnr(exact, hr, crop_border=crop),
                        "psnr_auto": psnr(fast, hr, crop_border=crop),
                        "psnr_auto_vs_fp32": psnr(fast, exact, crop_border=crop),
                    }
                )
    return rows


def section_precision(ctx: Context) -> list[dict[str, Any]]:
    """Issue 15: `--precision` speed (rcan-paper and rcan-cpu ×2) and quality (demo bundles)."""
    rows = _precision_speed(ctx, "rcan-paper") + _precision_speed(ctx, "rcan-cpu")
    bundles = ctx.args.bundles
    if not list(bundles.glob("*.safetensors")):
        print(f"  no bundles in {bundles}: quality not measured (run `make demo`)", flush=True)
        return rows
    return rows + _precision_quality(bundles)


def section_compile(ctx: Context) -> list[dict[str, Any]]:
    """torch.compile for inference (rcan-paper ×2): compile time and steady-state speed."""
    size = ctx.args.infer_size
    spec = spec_of("rcan-paper", 2)
    rows = []
    fns = {}
    for v in (Variant(compile=True), Variant(channels_last=True, compile=True)):
        fn = forward_step(build(spec, reference=False), size=size, variant=v)
        start = time.perf_counter()
        fn()
        rows.append({"setup": f"ours: {v.label}", "compile_seconds": time.perf_counter() - start})
        fns[f"ours: {v.label}"] = fn
    fns["ours: channels_last"] = forward_step(
        build(spec, reference=False), size=size, variant=Variant(channels_last=True)
    )
    times = median_times(fns, warmup=1, repeats=ctx.args.repeats)
    gflop = 2 * conv_macs(spec, size, size) / 1e9
    for label, t in times.items():
        sec = statistics.median(t)
        rows.append(
            {
                "setup": label,
                "size": size,
                "seconds": sec,
                "times": t,
                "mp_per_s": (2 * size) ** 2 / 1e6 / sec,
                "gflops": gflop / sec,
                "of_gemm": gflop / sec / ctx.gemm if ctx.gemm else None,
                "repeats": ctx.args.repeats,
            }
        )
    return rows


def section_data(ctx: Context) -> list[dict[str, Any]]:
    """`random_batch` for the cpu profile (batch 8 of 32², flips/rotations) against the step."""
    from twostage.data.datasets import Pair, PairSet, random_batch

    rows = []
    rng0 = np.random.default_rng(0)
    for preset, scale in (("rcan-cpu", 2), ("rcan-cpu", 4)):
        # demo-like data: 12 pairs, input 64² (a 256² HR crop, the cpu profile's hr_crop,
        # degraded ×4), uint8 in memory as the trainer holds them
        lr = 64
        pairs = PairSet(
            [
                Pair(
                    name=f"img{i}",
                    input=rng0.integers(0, 256, (lr, lr, 3), np.uint8),
                    target=rng0.integers(0, 256, (lr * scale, lr * scale, 3), np.uint8),
                )
                for i in range(12)
            ],
            scale=scale,
            name="bench",
        )
        counter = iter(range(10**9))

        def draw(pairs: PairSet = pairs, counter: Iterator[int] = counter) -> None:
            random_batch(
                pairs, batch_size=8, patch_size=32, rng=np.random.default_rng([0, next(counter), 0])
            )

        step = train_step(
            build(spec_of(preset, scale), reference=False), batch=8, patch=32, variant=Variant()
        )
        times = median_times({"data": draw, "step": step}, warmup=2, repeats=ctx.args.repeats)
        data, sec = statistics.median(times["data"]), statistics.median(times["step"])
        rows.append(
            {
                "preset": preset,
                "scale": scale,
                "batch": 8,
                "patch": 32,
                "data_ms": data * 1e3,
                "step_ms": sec * 1e3,
                "fraction": data / (data + sec),
                "repeats": ctx.args.repeats,
            }
        )
    return rows


def _hr_patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n random size×size crops of the embedded training photos, uint8 N×H×W×3."""
    from twostage.data.samples import load_samples

    rng = np.random.default_rng(seed)
    images = [img for _, img in load_samples("train")]
    crops = []
    for i in rng.integers(0, len(images), size=n):
        img = images[int(i)]
        y, x = (int(rng.integers(0, d - size + 1)) for d in img.shape[:2])
        crops.append(img[y : y + size, x : x + size])
    return np.stack(crops)


def section_degrade(ctx: Context) -> list[dict[str, Any]]:
    """Degrading one cpu-profile batch on the fly (8 HR patches of 128², ×4 → 32²) against
    one rcan-cpu ×2 train step (batch 8 of 32², channels_last): `realistic` and the demo's
    `realistic-mix` (`degrade_batch`, per patch) and, for comparison, the numpy `camera`
    preset applied patch by patch."""
    from twostage.ops.degrade import PRESETS, degrade
    from twostage.ops.realistic import degrade_batch

    patches = _hr_patches(8, 128)
    hr = torch.from_numpy(patches).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    counter = iter(range(10**9))

    def realistic(counter: Iterator[int] = counter) -> None:
        degrade_batch(hr, scale=4, seed=0, iteration=next(counter))

    def realistic_mix(counter: Iterator[int] = counter) -> None:
        mix = PRESETS["realistic-mix"].steps[0]
        degrade_batch(hr, scale=4, seed=0, iteration=next(counter), family=mix)

    def camera(counter: Iterator[int] = counter) -> None:
        it = next(counter)
        for i, p in enumerate(patches):
            degrade(p, "camera", scale=4, seed=it * 8 + i)

    step = train_step(
        build(spec_of("rcan-cpu", 2), reference=False),
        batch=8,
        patch=32,
        variant=Variant(channels_last=True),
    )
    fns = {"realistic": realistic, "realistic-mix": realistic_mix, "camera": camera, "step": step}
    times = median_times(fns, warmup=2, repeats=2 * ctx.args.repeats)
    sec = statistics.median(times["step"])
    return [
        {
            "degradation": name,
            "how": "numpy, per patch" if name == "camera" else "per patch: numpy, scipy FFT, PIL",
            "batch": 8,
            "hr": 128,
            "scale": 4,
            "degrade_ms": statistics.median(times[name]) * 1e3,
            "degrade_range_ms": [min(times[name]) * 1e3, max(times[name]) * 1e3],
            "step_ms": sec * 1e3,
            "ratio": statistics.median(times[name]) / sec,
            "repeats": len(times[name]),
        }
        for name in ("realistic", "realistic-mix", "camera")
    ]


def _run_polled(cmd: list[str], *, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run `cmd`; wall seconds, peak RSS (bytes, the process and its children, polled every
    20 ms) and the output's tail."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        peak = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                rss = ps.memory_info().rss + sum(
                    c.memory_info().rss for c in ps.children(recursive=True)
                )
                peak = max(peak, rss)
            time.sleep(0.02)
        wall = time.perf_counter() - start
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}): {tail}")
    return wall, peak, tail


def section_tiled(ctx: Context) -> list[dict[str, Any]]:
    """`twostage restore --tile N` of a map2 + ×2 rcan-paper bundle in a subprocess: wall time
    and peak RSS for a 2040×1356 result from a 510×339 input (and 4080×2712 with --big)."""
    from twostage.ops.imageio import write_image
    from twostage.pipeline import Pipeline

    spec = spec_of("rcan-paper", 2)
    rows = []
    exe = str(Path(sys.executable).with_name("twostage"))
    sizes = [(339, 510)] + ([(678, 1020)] if ctx.args.big else [])
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "map2-x2.safetensors"
        Pipeline(
            build(spec, reference=False, seed=1), build(spec, reference=False, seed=2)
        ).save_bundle(bundle)
        rng = np.random.default_rng(0)
        for h, w in sizes:
            img_path = Path(tmp) / f"in_{w}x{h}.png"
            # a smooth random image (noise alone is not what photos look like; speed is equal)
            small = rng.random((h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
            img = np.kron(small, np.ones((8, 8, 1), np.float32))[:h, :w]
            write_image(img_path, img)
            for tile in ctx.args.tiles:
                out = Path(tmp) / f"out_{tile}"
                cmd = [
                    exe,
                    "restore",
                    "--model",
                    str(bundle),
                    str(img_path),
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                ]
                if tile != "none":
                    cmd += ["--tile", tile]
                print(f"  restore {w}×{h} → {4 * w}×{4 * h}, tile {tile}", flush=True)
                wall, peak, _ = _run_polled(cmd)
                rows.append(
                    {
                        "input": f"{w}×{h}",
                        "output": f"{4 * w}×{4 * h}",
                        "tile": tile,
                        "seconds": wall,
                        "peak_rss_gib": peak / 2**30,
                        "mp_per_s": 16 * w * h / 1e6 / wall,
                        "command": "twostage restore --model map2-x2.safetensors "
                        "in.png --out DIR --device cpu"
                        + ("" if tile == "none" else f" --tile {tile}"),
                    }
                )
    return rows


def section_profile(ctx: Context) -> list[dict[str, Any]]:
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
        table = prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40
        )
        rows.append(
            {
                "mode": mode,
                "preset": preset,
                "scale": scale,
                "variant": variant.label,
                "note": note,
                "table": _trim_profile(table),
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
from run import Variant, build, median_times, spec_of, train_step
torch.set_num_threads(int(sys.argv[1]))
step = train_step(build(spec_of("rcan-cpu", 2), reference=False), batch=8, patch=32,
                  variant=Variant())
print(statistics.median(median_times({"s": step}, warmup=2, repeats=int(sys.argv[2]))["s"]))
"""


def section_threads(ctx: Context) -> list[dict[str, Any]]:
    """The rcan-cpu ×2 train step with 2 threads (OMP_WAIT_POLICY PASSIVE / ACTIVE) and 1
    thread, alone and with one core taken by a spinning process (a busy machine)."""
    rows = []
    paths = [str(ROOT / "src"), str(Path(__file__).resolve().parent)]
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


def section_demo(ctx: Context) -> list[dict[str, Any]]:
    exe = str(Path(sys.executable).with_name("twostage"))
    rows = []
    for quick in [v == "quick" for v in ctx.args.demo_runs]:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [exe, "demo", "--out", tmp] + (["--quick"] if quick else [])
            print(f"  {'twostage demo --quick' if quick else 'twostage demo'}", flush=True)
            wall, peak, _ = _run_polled(cmd)
            rows.append(
                {
                    "command": "twostage demo --out DIR" + (" --quick" if quick else ""),
                    "seconds": wall,
                    "peak_rss_gib": peak / 2**30,
                }
            )
    return rows


RUNNERS: dict[str, Callable[[Context], list[dict[str, Any]]]] = {
    "gemm": section_gemm,
    "train": section_train,
    "variants": section_variants,
    "infer": section_infer,
    "pipeline": section_pipeline,
    "precision": section_precision,
    "compile": section_compile,
    "data": section_data,
    "degrade": section_degrade,
    "tiled": section_tiled,
    "profile": section_profile,
    "threads": section_threads,
    "demo": section_demo,
}


# ============================================================================ report


def fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{suffix}"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _section_head(sec: dict[str, Any]) -> list[str]:
    load = sec.get("load_before", {})
    others = [" ".join(o.split()) for o in load.get("others") or []]
    busy = (
        ("; other processes busy: " + "; ".join(f"`{o}`" for o in others))
        if others
        else " (no other busy process)"
    )
    gemm = (
        f" GEMM peak measured just before: {sec['gemm_gflops']:.0f} GFLOP/s."
        if sec.get("gemm_gflops")
        else ""
    )
    cpu = f" CPU: {sec['cpu']}." if sec.get("cpu") else ""
    return [
        f"Command: `{sec['command']}` — {sec['when']}, load average "
        f"{', '.join(map(str, load.get('loadavg', [])))}{busy}.{gemm}{cpu}",
        "",
    ]


def render(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    s = results.get("sections", {})
    L: list[str] = ["# Benchmarks", ""]
    L += [
        "Generated by `benchmarks/run.py` (`make bench`); rows are stored in "
        "`benchmarks/results/cpu.json`, and a section re-run with `--only NAME` replaces "
        "only its rows. Every timing is a median after warm-up; ours and the reference run "
        "alternately in the same process with the same threads. GFLOP/s count the "
        "convolutions only (`twostage.models.conv_macs`; a train step is 3 × the forward "
        "FLOPs). Analysis and conclusions: the end of this file.",
        "",
    ]
    L += ["## Machine", ""]
    L += _table(
        ["", ""],
        [
            ["CPU", f"{m.get('cpu')} ({m.get('cores')} cores; {', '.join(m.get('flags', []))})"],
            ["RAM", f"{m.get('ram_gib')} GiB"],
            [
                "software",
                f"Python {m.get('python')}, torch {m.get('torch')} (oneDNN: "
                f"{m.get('onednn')}), numpy {m.get('numpy')}",
            ],
            [
                "threads",
                f"torch {m.get('threads')} threads, OMP_WAIT_POLICY="
                f"{m.get('omp_wait_policy') or '(unset)'}, OMP_NUM_THREADS="
                f"{m.get('omp_num_threads') or '(unset)'}",
            ],
        ],
    )
    L.append("")
    L += _render_targets(s)
    renderers = [
        ("gemm", "GEMM peak (the machine's limit)", _render_gemm),
        ("train", "Training step, ours vs the reference RCAN", _render_train),
        ("variants", "Training step: memory format, bf16, compile", _render_variants),
        ("infer", "Inference, rcan-paper ×2", _render_infer),
        ("pipeline", "Inference, map2 + ×2 pipeline", _render_pipeline),
        ("precision", "Inference precision: restore --precision", _render_precision),
        ("compile", "Inference with torch.compile", _render_compile),
        ("data", "Data loading vs step time (cpu profile)", _render_data),
        ("degrade", "Degrading on the fly vs step time (cpu profile)", _render_degrade),
        ("tiled", "Tiled restore: wall time and peak memory", _render_tiled),
        ("threads", "Threads on a busy machine", _render_threads),
        ("demo", "Demo wall time", _render_demo),
        ("profile", "Profiles: where the time goes", _render_profile),
    ]
    for key, title, fn in renderers:
        L += [f"## {title}", ""]
        if key not in s:
            L += ["Not measured yet (`python benchmarks/run.py --only " + key + "`).", ""]
            continue
        if s[key].get("error"):
            L += [*_section_head(s[key]), f"Failed: `{s[key]['error']}`", ""]
            continue
        L += _section_head(s[key]) + fn(s[key]["rows"]) + [""]
    L += _render_gpu()
    if NOTES.is_file():
        L += ["", NOTES.read_text(encoding="utf-8").rstrip()]
    return "\n".join(L) + "\n"


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**not met**")


def _render_targets(s: dict[str, Any]) -> list[str]:
    rows = []

    def find(sec: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        for r in s.get(sec, {}).get("rows", []):
            if pred(r):
                return r
        return None

    for case in ("rcan-paper", "rcan-cpu"):
        r = find("train", lambda r, c=case: r["preset"] == c and r["scale"] == 2)
        if r:
            rows.append(
                [
                    f"CPU train step {case} ×2 ≥ 1.0× reference",
                    fmt(r.get("speedup"), ".2f", "×"),
                    _verdict(r.get("speedup") and r["speedup"] >= 1.0),
                ]
            )
            rows.append(
                [
                    f"CPU train step {case} ×2 ≥ 90 % of GEMM peak",
                    pct(r.get("of_gemm")),
                    _verdict(r.get("of_gemm") and r["of_gemm"] >= 0.9),
                ]
            )
    best = max(
        s.get("infer", {}).get("rows", []) or [{}],
        key=lambda r: (
            r.get("vs_reference_eager", 0)
            if r.get("setup", "").startswith("ours")
            and "bf16" not in r.get("setup", "")
            and "bf32" not in r.get("setup", "")
            else 0
        ),
    )
    if best.get("setup"):
        rows.append(
            [
                f"CPU inference ≥ 1.25× reference (eager), fp32 ({best['setup']})",
                fmt(best["vs_reference_eager"], ".2f", "×"),
                _verdict(best["vs_reference_eager"] >= 1.25),
            ]
        )
        rows.append(
            [
                "CPU inference ≥ 90 % of GEMM peak, fp32",
                pct(best.get("of_gemm")),
                _verdict(best.get("of_gemm") and best["of_gemm"] >= 0.9),
            ]
        )
    if s.get("precision", {}).get("rows"):
        rows += _precision_targets(s["precision"]["rows"])
    for family in ("realistic", "realistic-mix"):
        r = find("degrade", lambda r, family=family: r["degradation"] == family)
        if r:
            rows.append(
                [
                    f"`{family}` degraded on the fly ≤ 10 % of a cpu-profile train step",
                    pct(r["ratio"]),
                    _verdict(r["ratio"] <= 0.1),
                ]
            )
    gpu = _gpu_results()
    if gpu:
        mfu = max((r.get("mfu_datasheet") or 0 for r in gpu[-1][1].get("train", [])), default=0)
        rows.append(
            [
                f"GPU ≥ 40 % MFU (bf16 dense datasheet peak; best row of {gpu[-1][0]})",
                f"{100 * mfu:.1f} %",
                _verdict(mfu >= 0.4),
            ]
        )
    if not rows:
        return []
    return ["## Targets (issues 9, 14 and 15)", "", *_table(["target", "measured", ""], rows), ""]


def _render_gemm(rows: list[dict[str, Any]]) -> list[str]:
    return _table(["operation", "GFLOP/s"], [[r["what"], f"{r['gflops']:.0f}"] for r in rows])


def _render_train(rows: list[dict[str, Any]]) -> list[str]:
    out = _table(
        [
            "network",
            "batch",
            "s/iter (ours)",
            "GFLOP/s",
            "% of GEMM",
            "s/iter (reference)",
            "ours/ref speed",
            "runs",
            "what",
        ],
        [
            [
                f"{r['preset']} ×{r['scale']}",
                f"{r['batch']} × {r['patch']}²",
                fmt(r["seconds"], ".3f"),
                f"{r['gflops']:.0f}",
                pct(r["of_gemm"]),
                fmt(r.get("ref_seconds"), ".3f"),
                fmt(r.get("speedup"), ".2f", "×"),
                str(r["repeats"]),
                r["note"],
            ]
            for r in rows
        ],
    )
    big = [r for r in rows if r["preset"].endswith("paper")]
    if big:
        out += [
            "",
            f"The paper-size rows take several seconds per step: {big[0]['repeats']} "
            "timed steps after 1 warm-up (the small presets: the median of more).",
        ]
    return out


def _same_case(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["preset"], a["scale"]) == (b["preset"], b["scale"])


def _render_variants(rows: list[dict[str, Any]]) -> list[str]:
    timed = [r for r in rows if "seconds" in r]
    out = _table(
        ["network", "set-up", "s/iter", "GFLOP/s", "% of GEMM", "speed vs contiguous", "runs"],
        [
            [
                f"{r['preset']} ×{r['scale']} ({r['batch']} × {r['patch']}²)",
                r["variant"],
                fmt(r["seconds"], ".3f"),
                f"{r['gflops']:.0f}",
                pct(r["of_gemm"]),
                fmt(r["vs_contiguous"], ".2f", "×"),
                str(r["repeats"]),
            ]
            for r in timed
        ],
    )
    for r in timed:
        fp32 = next(
            (f for f in timed if _same_case(f, r) and f["variant"] == TRAINER_FP32.label), None
        )
        if r["variant"] == TRAINER_BF16.label and fp32 is not None:
            out += [
                "",
                f"{r['preset']} ×{r['scale']}: `run.amp: bf16` trains "
                f"{fp32['seconds'] / r['seconds']:.2f}× as fast as fp32 "
                f"({TRAINER_FP32.label}, as the cpu profile trains).",
            ]
    for r in rows:
        if "compile_seconds" in r:
            out += [
                "",
                f"torch.compile of the {r['preset']} ×{r['scale']} train step took "
                f"{r['compile_seconds']:.0f} s (first call).",
            ]
    return out


def _inference_table(rows: list[dict[str, Any]]) -> list[str]:
    return _table(
        ["set-up", "s/image", "MP/s", "GFLOP/s", "% of GEMM", "vs reference eager", "runs"],
        [
            [
                r["setup"],
                fmt(r["seconds"], ".2f"),
                fmt(r["mp_per_s"], ".3f"),
                f"{r['gflops']:.0f}",
                pct(r["of_gemm"]),
                fmt(r["vs_reference_eager"], ".2f", "×"),
                str(r["repeats"]),
            ]
            for r in rows
        ],
    )


def _render_infer(rows: list[dict[str, Any]]) -> list[str]:
    size = rows[0]["size"]
    return [
        f"One {size}×{size} input → {2 * size}×{2 * size} output, "
        "`torch.inference_mode()`; MP/s are output megapixels per second.",
        "",
        *_inference_table(rows),
    ]


def _render_pipeline(rows: list[dict[str, Any]]) -> list[str]:
    size = rows[0]["size"]
    return [
        f"rcan-paper ×2 (map2) → 8-bit intermediate → rcan-paper ×2, one {size}×{size} "
        f"input → {4 * size}×{4 * size} output.",
        "",
        *_inference_table(rows),
    ]


def _render_precision(rows: list[dict[str, Any]]) -> list[str]:
    speed = [r for r in rows if r["kind"] == "speed"]
    out = [
        f"`Pipeline.restore` of one {speed[0]['size']}² image (a loaded bundle, channels_last, "
        "as `twostage restore --precision MODE` runs it) against the fp32 reference RCAN "
        f"(contiguous, eager) on the same image. `auto` here: {speed[0]['auto_reason']} "
        "(marked ◀).",
        "",
        *_table(
            ["network", "set-up", "s/image", "vs reference fp32", "vs ours fp32", "runs"],
            [
                [
                    f"{r['preset']} ×2",
                    r["setup"] + (" ◀ auto" if r["auto"] else ""),
                    fmt(r["seconds"], ".3f"),
                    fmt(r["vs_reference"], ".2f", "×"),
                    fmt(r["vs_fp32"], ".2f", "×"),
                    str(r["repeats"]),
                ]
                for r in speed
            ],
        ),
    ]
    quality = [r for r in rows if r["kind"] == "quality"]
    if not quality:
        return [*out, "", "Quality not measured: no demo bundles (`--bundles DIR`)."]
    groups = _precision_groups(quality)
    out += [
        "",
        "Quality on the demo's bundles and test photos: PSNR (RGB, crop = scale) against GT, "
        "mean over the images, and the lowest PSNR of an `auto` output against the fp32 one.",
        "",
        *_table(
            ["bundle", "test set", "mode", "fp32 dB", "auto dB", "Δ dB", "auto vs fp32 (min)"],
            [
                [
                    bundle,
                    test_set,
                    g[0]["mode"],
                    fmt(statistics.mean(r["psnr_fp32"] for r in g), ".3f"),
                    fmt(statistics.mean(r["psnr_auto"] for r in g), ".3f"),
                    fmt(_precision_delta(g), "+.3f"),
                    fmt(min(r["psnr_auto_vs_fp32"] for r in g), ".1f", " dB"),
                ]
                for (bundle, test_set), g in groups.items()
            ],
        ),
    ]
    return out


def _precision_groups(quality: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict]]:
    """Quality rows by (bundle, test set)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in quality:
        groups.setdefault((r["bundle"], r["test_set"]), []).append(r)
    return groups


def _precision_delta(rows: list[dict[str, Any]]) -> float:
    """Mean PSNR against GT of the auto outputs minus that of the fp32 outputs."""
    return statistics.mean(r["psnr_auto"] - r["psnr_fp32"] for r in rows)


def _precision_targets(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Issue 15's rows of the targets table."""

    auto = [r for r in rows if r["kind"] == "speed" and r["auto"]]
    paper = [r for r in auto if r["preset"] == "rcan-paper"]
    out = []
    if paper:
        out.append(
            [
                "CPU restore --precision auto ≥ 3× the fp32 reference (rcan-paper ×2)",
                fmt(paper[0]["vs_reference"], ".2f", "×"),
                _verdict(paper[0]["vs_reference"] >= 3.0),
            ]
        )
    if auto:
        slowest = min(r["vs_fp32"] for r in auto)
        out.append(
            [
                "restore --precision auto ≥ 1.0× fp32 (every network)",
                fmt(slowest, ".2f", "×"),
                _verdict(slowest >= 1.0),
            ]
        )
    quality = [r for r in rows if r["kind"] == "quality"]
    if quality:
        groups = _precision_groups(quality)
        worst = max(abs(_precision_delta(g)) for g in groups.values())
        lowest = min(r["psnr_auto_vs_fp32"] for r in quality)
        out += [
            [
                "auto within 0.05 dB of fp32 against GT (demo bundles)",
                fmt(worst, ".3f", " dB"),
                _verdict(worst <= 0.05),
            ],
            [
                "auto ≥ 45 dB PSNR against the fp32 output",
                fmt(lowest, ".1f", " dB"),
                _verdict(lowest >= 45.0),
            ],
        ]
    return out


def _render_compile(rows: list[dict[str, Any]]) -> list[str]:
    timed = [r for r in rows if "seconds" in r]
    out = _table(
        ["set-up", "s/image", "MP/s", "GFLOP/s", "% of GEMM", "runs"],
        [
            [
                r["setup"],
                fmt(r["seconds"], ".2f"),
                fmt(r["mp_per_s"], ".3f"),
                f"{r['gflops']:.0f}",
                pct(r["of_gemm"]),
                str(r["repeats"]),
            ]
            for r in timed
        ],
    )
    for r in rows:
        if "compile_seconds" in r:
            out += ["", f"{r['setup']}: first call (compilation) {r['compile_seconds']:.0f} s."]
    return out


def _render_data(rows: list[dict[str, Any]]) -> list[str]:
    return _table(
        [
            "network",
            "batch",
            "random_batch (ms)",
            "train step (ms)",
            "data / (data + step)",
            "runs",
        ],
        [
            [
                f"{r['preset']} ×{r['scale']}",
                f"{r['batch']} × {r['patch']}²",
                fmt(r["data_ms"], ".2f"),
                fmt(r["step_ms"], ".1f"),
                pct(r["fraction"]),
                str(r["repeats"]),
            ]
            for r in rows
        ],
    )


def _render_degrade(rows: list[dict[str, Any]]) -> list[str]:
    return _table(
        ["degradation", "how", "batch", "degrade (ms)", "train step (ms)", "degrade / step"],
        [
            [
                f"`{r['degradation']}`",
                r["how"],
                f"{r['batch']} × {r['hr']}² HR, ×{r['scale']}",
                f"{r['degrade_ms']:.1f} ({r['degrade_range_ms'][0]:.1f}–"
                f"{r['degrade_range_ms'][1]:.1f})",
                fmt(r["step_ms"], ".1f"),
                pct(r["ratio"]),
            ]
            for r in rows
        ],
    )


def _render_tiled(rows: list[dict[str, Any]]) -> list[str]:
    table = _table(
        ["input → output", "tile", "wall (s)", "peak RSS (GiB)", "output MP/s", "command"],
        [
            [
                f"{r['input']} → {r['output']}",
                r["tile"],
                fmt(r["seconds"], ".1f"),
                fmt(r["peak_rss_gib"], ".2f"),
                fmt(r["mp_per_s"], ".3f"),
                f"`{r['command']}`",
            ]
            for r in rows
        ],
    )
    return [
        "map2 + ×2 rcan-paper bundle (random weights), one image, in a subprocess; peak "
        "RSS polled every 20 ms (process and children).",
        "",
        *table,
    ]


def _render_demo(rows: list[dict[str, Any]]) -> list[str]:
    return _table(
        ["command", "wall (min)", "peak RSS (GiB)"],
        [
            [f"`{r['command']}`", fmt(r["seconds"] / 60, ".1f"), fmt(r["peak_rss_gib"], ".2f")]
            for r in rows
        ],
    )


def _render_threads(rows: list[dict[str, Any]]) -> list[str]:
    alone = {(r["threads"], r["policy"]): r["seconds"] for r in rows if not r["busy_core"]}
    return [
        "rcan-cpu ×2 train step (batch 8 of 32²) in a fresh process per row; 'one core "
        "busy' = a second process spinning in a Python loop meanwhile.",
        "",
        *_table(
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


def _render_profile(rows: list[dict[str, Any]]) -> list[str]:
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


def _gpu_results(prefix: str = "gpu-") -> list[tuple[str, dict[str, Any]]]:
    """benchmarks/results/<prefix>*.json: the stand-alone step's (gpu.py), or with prefix
    "gpu_trainer-" the trainer check's (gpu_trainer.py, saved under that name)."""
    found = []
    for p in sorted(RESULTS.glob(f"{prefix}*.json")):
        if prefix == "gpu-" and p.name.startswith("gpu-trainer"):
            continue  # gpu_trainer.py's own output name, copied as is
        with contextlib.suppress(OSError, ValueError):
            found.append((p.name, json.loads(p.read_text(encoding="utf-8"))))
    return found


_TRAINER_CHECK = (
    "`bash benchmarks/gpu.sh` is the prepared check, one command under 9 minutes "
    "(`benchmarks/gpu_trainer.py`): the paper profile trained by `twostage.train` itself for "
    "200 steps eager and 200 with `run.cuda_graph=true` from one seed, per-step losses compared "
    "(exit 1 on a mismatch), then the trainer's step time and MFU of both; results in "
    "`$OUT/gpu-trainer.{json,md}` (save the JSON as `benchmarks/results/gpu_trainer-<card>.json`). "
    "The GPU machine's python lacks pyyaml, tqdm, safetensors and pypng: `make gpu-wheels` "
    "stages their wheels in `benchmarks/wheels/` here; carry that folder along."
)


def _render_trainer_check() -> list[str]:
    checks = _gpu_results("gpu_trainer-")
    if not checks:
        return [
            "**The trainer's CUDA graph path (`run.cuda_graph`) has never run on a GPU, so it is "
            "off by default.** " + _TRAINER_CHECK + " Result: **not yet run**. Turn the default "
            "on only if the losses agree.",
            "",
        ]
    import gpu_trainer  # benchmarks/ is on sys.path (above)

    L = [_TRAINER_CHECK, ""]
    for name, g in checks:
        L += [gpu_trainer.markdown(g).replace("## ", "### "), f"(`benchmarks/results/{name}`)", ""]
    return L


def _render_gpu() -> list[str]:
    L = ["## GPU", "", *_render_trainer_check()]
    runs = _gpu_results()
    if not runs:
        return [*L, "Stand-alone step not measured yet: `python3 benchmarks/gpu.py`.", ""]
    L += [
        "The rows below are of the stand-alone step (`benchmarks/gpu.py`; "
        "`GPU_BENCH_STANDALONE=1 bash benchmarks/gpu.sh` runs it too), not of the trainer.",
        "",
    ]
    for name, g in runs:
        L += [
            f"`benchmarks/gpu.py` on {g.get('device')} (torch {g.get('torch')}), "
            f"{g.get('preset')} batch {g.get('batch')} of {g.get('patch')}², "
            f"results `benchmarks/results/{name}`. Measured matmul "
            f"{fmt(g.get('matmul_tflops'), '.0f')} TFLOP/s bf16 "
            f"({g.get('matmul_n', 8192)}³), copy {fmt(g.get('copy_tbps'), '.2f')} TB/s.",
            "",
        ]
        rows = []
        for r in g.get("train", []):
            if "error" in r:
                rows.append(
                    [f"×{r['scale']}", r["mode"], f"failed: {r['error'][:60]}", "", "", "", ""]
                )
                continue
            rows.append(
                [
                    f"×{r['scale']}",
                    r["mode"] + (f", batch {r['batch']}" if r.get("batch", 8) != 8 else ""),
                    fmt(r["step_ms"], ".1f"),
                    fmt(r["tflops"], ".1f"),
                    fmt(100 * (r.get("mfu_datasheet") or 0), ".1f", " %"),
                    fmt(100 * r["mfu_measured_matmul"], ".1f", " %"),
                    fmt(r.get("paper_150k_hours"), ".1f"),
                ]
            )
        L += _table(
            [
                "scale",
                "mode",
                "ms/step",
                "TFLOP/s",
                "MFU (datasheet bf16)",
                "of measured matmul",
                "150k iters at batch 8 (h)",
            ],
            rows,
        )
        for prof in g.get("profiles", []):
            if "kernels" in prof:
                L += [
                    "",
                    f"Profile of one eager {prof['mode']} step: {prof['kernels']} kernels, "
                    f"{prof['kernel_ms']:.1f} ms of kernel time in a "
                    f"{prof['profiled_wall_ms']:.1f} ms (profiled) step.",
                ]
        inf = [(k, v) for k, v in g.items() if k.startswith("inference_") and k.endswith("mps")]
        if inf:
            L += [
                "",
                "Inference (output MP/s, "
                + f"{g.get('inference_size')}² input): "
                + ", ".join(f"{k[len('inference_') : -4]} {v:.1f}" for k, v in inf)
                + ".",
            ]
        L.append("")
    return L


# ============================================================================ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="render BENCHMARKS.md here")
    parser.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
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
    args = parser.parse_args()
    if args.smoke:
        SMOKE_PRESETS.update(
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

    if args.only:
        chosen = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in chosen if s not in SECTIONS]
        if bad:
            parser.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    else:
        chosen = list(SECTIONS)
    if args.skip_demo:
        chosen = [s for s in chosen if s != "demo"]
    if args.render_only:
        chosen = []
    if NEEDS_GEMM & set(chosen) and "gemm" not in chosen:
        chosen.insert(0, "gemm")  # the ratios need this run's GEMM peak

    results: dict[str, Any] = {}
    if args.json.is_file():
        results = json.loads(args.json.read_text(encoding="utf-8"))
    results.setdefault("sections", {})
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
        print(f"[{name}]", flush=True)
        sec: dict[str, Any] = {
            "command": command + ("" if args.only else f"  (section {name})"),
            "when": dt.datetime.now().isoformat(timespec="minutes"),
            "load_before": load_snapshot(),
            "cpu": f"{here['cpu']} ({', '.join(here['flags'])})",
        }
        start = time.perf_counter()
        try:
            if name in NEEDS_GEMM:  # this section's ratios use a GEMM peak measured just now
                ctx.gemm = sec["gemm_gflops"] = gemm_gflops(torch.float32)
            sec["rows"] = RUNNERS[name](ctx)
        except Exception as exc:  # one failed section must not lose the others
            sec["error"] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"  failed: {sec['error']}", flush=True)
        sec["seconds"] = time.perf_counter() - start
        sec["load_after"] = {"loadavg": [round(v, 2) for v in os.getloadavg()]}
        results["sections"][name] = sec
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")
        print(f"  done in {sec['seconds']:.0f} s", flush=True)
    if args.write:
        write_text_atomic(args.write, render(results))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
