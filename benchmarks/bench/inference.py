"""Inference sections: one network (`infer`), the map2 + ×2 pipeline (`pipeline`),
`restore --precision` (`precision`), torch.compile (`compile`) and tiled restore in a
subprocess (`tiled`). FLOPs: forward = 2 × the convolutions' MACs."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from twostage.models import conv_macs

from .harness import Context, Row, Step, fmt, median_times, pct, run_polled, table
from .nets import Variant, build, conv_math, spec_of

# ============================================================================ measure


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


def section_infer(ctx: Context) -> list[Row]:
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
    rows = _speed_rows(ctx, times, size=size, out_mp=out_mp, gflop=gflop, ref=ref)
    return [{"preset": "rcan-paper", "scale": 2, **row} for row in rows]


def _speed_rows(
    ctx: Context,
    times: dict[str, list[float]],
    *,
    size: int,
    out_mp: float,
    gflop: float,
    ref: float,
) -> list[Row]:
    """One row per set-up: median seconds, output MP/s, GFLOP/s, share of the GEMM peak and
    speed against the eager reference (`ref` seconds)."""
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


def section_pipeline(ctx: Context) -> list[Row]:
    """map2 (rcan-paper ×2) + stage 2 (rcan-paper ×2) on one image: twostage.Pipeline as
    `twostage restore` runs it, and with channels_last, vs the same chain of reference nets
    (with the same 8-bit intermediate)."""
    from twostage.ops.imageio import quantize
    from twostage.pipeline import Pipeline

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
    return _speed_rows(ctx, times, size=size, out_mp=out_mp, gflop=gflop, ref=ref)


PRECISION_MODES = ("fp32", "bf32", "bf16")


def _precision_speed(ctx: Context, preset: str) -> list[Row]:
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


def _precision_quality(bundles: Path) -> list[Row]:
    """Each bundle in `bundles` (the demo's), on the demo's test photos: PSNR against GT of
    the fp32 and the `auto` outputs, and PSNR of the `auto` output against the fp32 one."""
    from twostage.config import get_profile
    from twostage.data.splits import plan_data
    from twostage.ops.degrade import SUITE
    from twostage.ops.metrics import psnr
    from twostage.pipeline import Pipeline, load_pipeline
    from twostage.recipes import demo_recipe

    recipe = demo_recipe()
    _, test_sets = plan_data(recipe, [], get_profile("cpu"), sr=True)
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


def section_precision(ctx: Context) -> list[Row]:
    """`--precision` speed (rcan-paper and rcan-cpu ×2) and quality (the demo's bundles)."""
    rows = _precision_speed(ctx, "rcan-paper") + _precision_speed(ctx, "rcan-cpu")
    bundles = ctx.args.bundles
    if not list(bundles.glob("*.safetensors")):
        print(f"  no bundles in {bundles}: quality not measured (run `make demo`)", flush=True)
        return rows
    return rows + _precision_quality(bundles)


def section_compile(ctx: Context) -> list[Row]:
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


def section_tiled(ctx: Context) -> list[Row]:
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
                wall, peak, _ = run_polled(cmd)
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


# ============================================================================ render


def _inference_table(rows: list[Row]) -> list[str]:
    return table(
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


def render_infer(rows: list[Row]) -> list[str]:
    size = rows[0]["size"]
    return [
        f"One {size}×{size} input → {2 * size}×{2 * size} output, "
        "`torch.inference_mode()`; MP/s are output megapixels per second.",
        "",
        *_inference_table(rows),
    ]


def render_pipeline(rows: list[Row]) -> list[str]:
    size = rows[0]["size"]
    return [
        f"rcan-paper ×2 (map2) → 8-bit intermediate → rcan-paper ×2, one {size}×{size} "
        f"input → {4 * size}×{4 * size} output.",
        "",
        *_inference_table(rows),
    ]


def render_precision(rows: list[Row]) -> list[str]:
    speed = [r for r in rows if r["kind"] == "speed"]
    out = [
        f"`Pipeline.restore` of one {speed[0]['size']}² image (a loaded bundle, channels_last, "
        "as `twostage restore --precision MODE` runs it) against the fp32 reference RCAN "
        f"(contiguous, eager) on the same image. `auto` here: {speed[0]['auto_reason']} "
        "(marked ◀).",
        "",
        *table(
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
    groups = precision_groups(quality)
    out += [
        "",
        "Quality on the demo's bundles and test photos: PSNR (RGB, crop = scale) against GT, "
        "mean over the images, and the lowest PSNR of an `auto` output against the fp32 one.",
        "",
        *table(
            ["bundle", "test set", "mode", "fp32 dB", "auto dB", "Δ dB", "auto vs fp32 (min)"],
            [
                [
                    bundle,
                    test_set,
                    g[0]["mode"],
                    fmt(statistics.mean(r["psnr_fp32"] for r in g), ".3f"),
                    fmt(statistics.mean(r["psnr_auto"] for r in g), ".3f"),
                    fmt(precision_delta(g), "+.3f"),
                    fmt(min(r["psnr_auto_vs_fp32"] for r in g), ".1f", " dB"),
                ]
                for (bundle, test_set), g in groups.items()
            ],
        ),
    ]
    return out


def precision_groups(quality: list[Row]) -> dict[tuple[str, str], list[dict]]:
    """Quality rows by (bundle, test set)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in quality:
        groups.setdefault((r["bundle"], r["test_set"]), []).append(r)
    return groups


def precision_delta(rows: list[Row]) -> float:
    """Mean PSNR against GT of the auto outputs minus that of the fp32 outputs."""
    return statistics.mean(r["psnr_auto"] - r["psnr_fp32"] for r in rows)


def render_compile(rows: list[Row]) -> list[str]:
    timed = [r for r in rows if "seconds" in r]
    out = table(
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


def render_tiled(rows: list[Row]) -> list[str]:
    cells = table(
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
        *cells,
    ]
