"""Data sections: drawing a batch (`data`) and degrading one on the fly (`degrade`), each
against the train step it feeds."""

from __future__ import annotations

import statistics
from collections.abc import Iterator

import numpy as np
import torch

from .harness import Context, Row, fmt, median_times, pct, table
from .nets import Variant, build, spec_of
from .train import train_step

# ============================================================================ measure


def section_data(ctx: Context) -> list[Row]:
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


def section_degrade(ctx: Context) -> list[Row]:
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


# ============================================================================ render


def render_data(rows: list[Row]) -> list[str]:
    return table(
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


def render_degrade(rows: list[Row]) -> list[str]:
    return table(
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
