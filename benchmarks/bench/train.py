"""Training-step sections: ours vs the reference RCAN (`train`), and memory format, bf16 and
compile variants of the step (`variants`). `train_step` is the step the other areas time too.

FLOPs: a training step = 3 × forward (the backward pass costs two forward passes: gradients
of inputs and of weights).
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from twostage.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from twostage.data.datasets import SamplesData
from twostage.models import conv_macs
from twostage.models.common import ModelSpec
from twostage.train import make_step

from .harness import Context, Row, Step, fmt, median_times, pct, table
from .nets import Variant, build, conv_math, spec_of

# The cpu profile's trainer: channels_last, with and without `run.amp: bf16`.
TRAINER_FP32 = Variant(channels_last=True)
TRAINER_BF16 = Variant(channels_last=True, bf16=True)
# Results stored before the benchmarks timed the trainer's own step label its set-up (fused
# Adam, which the trainer always uses) "<set-up> + fused Adam"; a plain label there is unfused.
STORED_FUSED = " + fused Adam"


def step_config(*, scale: int, batch: int, patch: int, variant: Variant) -> TrainConfig:
    """The TrainConfig whose step the benchmarks time: the paper's Adam (lr 1e-4, β = 0.9/0.99,
    ε = 1e-8) and L1; run.amp and run.channels_last from `variant` (the network is given, so
    model and data only describe it)."""
    return TrainConfig(
        model=ModelConfig(preset=None, scale=scale),
        data=DataConfig(train=SamplesData(preset="bicubic"), patch_size=patch, batch_size=batch),
        optim=OptimConfig(lr=1e-4, betas=(0.9, 0.99), eps=1e-8, loss="l1"),
        run=RunConfig(
            device="cpu",
            amp="bf16" if variant.bf16 else "none",
            channels_last=variant.channels_last,
            compile=variant.compile,
        ),
    )


def train_step(
    model: nn.Module, *, batch: int, patch: int, variant: Variant, seed: int = 0
) -> Step:
    """The trainer's own step (`twostage.train.make_step`) on a fixed random batch, as the
    trainer runs it: channels_last network and input when the variant says so, the network
    compiled for `compile`, bf32 convolutions around the call for `bf32`."""
    scale = model.scale
    cfg = step_config(scale=scale, batch=batch, patch=patch, variant=variant)
    model = model.train()
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, patch, patch, generator=g)
    y = torch.rand(batch, 3, patch * scale, patch * scale, generator=g)
    if variant.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    trainer_step = make_step(cfg, model, torch.device("cpu"))
    if variant.compile:
        trainer_step.model = torch.compile(model)
    iterations = itertools.count(1)

    def step() -> None:
        with conv_math(variant):
            trainer_step(next(iterations), x, y)

    return step


def train_gflop(spec: ModelSpec, *, batch: int, patch: int) -> float:
    return 3 * 2 * conv_macs(spec, patch, patch) * batch / 1e9


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

# (network, the ways its step is run): the `variants` section.
VARIANT_CASES = (
    (
        TrainCase("rcan-cpu", 2, 8, 32, ""),
        (
            Variant(),
            TRAINER_FP32,
            Variant(channels_last=True, bf32=True),
            TRAINER_BF16,
            Variant(compile=True),
        ),
    ),
    (TrainCase("rcan-cpu", 4, 8, 32, ""), (Variant(), Variant(channels_last=True))),
    (TrainCase("edsr-cpu", 4, 8, 32, ""), (Variant(), TRAINER_FP32, TRAINER_BF16)),
    (TrainCase("rcan-paper", 2, 8, 96, ""), (Variant(), Variant(channels_last=True))),
)


def _repeats(ctx: Context, big: bool) -> tuple[int, int]:
    a = ctx.args
    return (1, a.paper_repeats) if big else (2, a.repeats)


# ============================================================================ measure


def section_train(ctx: Context) -> list[Row]:
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
        row = speed_row(case.preset, case.scale, times, gflop, ctx.gemm, repeats=repeats)
        row.update(batch=case.batch, patch=case.patch, note=case.note, gflop=gflop)
        rows.append(row)
        del fns
    return rows


def speed_row(
    preset: str,
    scale: int,
    times: dict[str, list[float]],
    gflop: float,
    gemm: float | None,
    *,
    repeats: int,
) -> Row:
    """A `train` row: our median step, GFLOP/s, share of the GEMM peak, speed vs reference."""
    ours = statistics.median(times["ours"])
    row: Row = {
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


def section_variants(ctx: Context) -> list[Row]:
    """Memory format / bf16 / compile for the train step (inference variants: `infer`)."""
    rows = []
    for case, variants in VARIANT_CASES:
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
        rows += _variant_rows(ctx, case, spec, times, repeats)
        del fns
    return rows


def _variant_rows(
    ctx: Context, case: TrainCase, spec: ModelSpec, times: dict[str, list[float]], repeats: int
) -> list[Row]:
    gflop = train_gflop(spec, batch=case.batch, patch=case.patch)
    base = statistics.median(times[Variant().label])
    rows = []
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
    return rows


# ============================================================================ render


def render_train(rows: list[Row]) -> list[str]:
    out = table(
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


def _trainer_pairs(timed: list[Row]) -> list[tuple[Row, Row]]:
    """Per network, its (bf16, fp32) rows of the trainer's set-up (TRAINER_BF16, TRAINER_FP32;
    in stored results that still carry it, their "+ fused Adam" rows)."""
    by_case: dict[tuple[str, int], dict[str, Row]] = {}
    for r in timed:
        by_case.setdefault((r["preset"], r["scale"]), {})[r["variant"]] = r
    pairs = []
    for by_label in by_case.values():
        for suffix in (STORED_FUSED, ""):
            bf16 = by_label.get(TRAINER_BF16.label + suffix)
            fp32 = by_label.get(TRAINER_FP32.label + suffix)
            if bf16 is not None and fp32 is not None:
                pairs.append((bf16, fp32))
                break
    return pairs


def render_variants(rows: list[Row]) -> list[str]:
    timed = [r for r in rows if "seconds" in r]
    out = table(
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
    for bf16, fp32 in _trainer_pairs(timed):
        out += [
            "",
            f"{bf16['preset']} ×{bf16['scale']}: `run.amp: bf16` trains "
            f"{fp32['seconds'] / bf16['seconds']:.2f}× as fast as fp32 "
            f"({fp32['variant']}, as the cpu profile trains).",
        ]
    for r in rows:
        if "compile_seconds" in r:
            out += [
                "",
                f"torch.compile of the {r['preset']} ×{r['scale']} train step took "
                f"{r['compile_seconds']:.0f} s (first call).",
            ]
    return out
