"""Peak memory of training on a large folder of photos (`memory`): a generated tree of 200 HR
images of DIV2K's size (2040×1356), trained on as `--data photos=` trains (kind photos, the
realistic-mix family drawn per patch, bicubic ↓2 targets). The decoded images alone would be
~1.7 GB as uint8 (~6.6 GB as float32): the lazy dataset keeps a bounded cache instead."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from twostage.ops.imageio import write_image

from .harness import Context, Row, fmt, run_polled, table

IMAGES, HEIGHT, WIDTH = 200, 1356, 2040  # DIV2K's typical size
TARGET_GB = 3.0  # the bound on training's peak RSS, whatever the number of images


def _tree(root: Path, n: int) -> None:
    """`n` textured HR images (gradients, stripes and low noise: PNG-compressible, not flat)."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    for i in range(n):
        rng = np.random.default_rng(i)
        f = rng.uniform(0.01, 0.2, size=3)
        img = np.stack(
            [0.5 + 0.4 * np.sin(f[c] * (xx + 3 * c * yy) / (1 + i % 7)) for c in range(3)], -1
        )
        grain = rng.normal(0, 0.02, size=(-(-HEIGHT // 8), WIDTH // 8, 1))
        img += grain.repeat(8, 0).repeat(8, 1)[:HEIGHT, :WIDTH]
        write_image(root / f"{i:04d}.png", np.clip(img, 0, 1))


def _config(root: Path, workers: int) -> dict:
    train = {
        "kind": "photos",
        "roots": [str(root)],
        "valid_roots": [str(root)],  # all 200 train
        "preset": "realistic-mix",
        "per_patch": True,
        "scale": 4,
        "target_domain": "bicubic-x2",
    }
    data = {"train": train, "val": None, "patch_size": 32, "batch_size": 8}
    if workers:
        data["num_workers"] = workers
    return {
        "profile": "tiny",
        "model": {"preset": "rcan-tiny", "scale": 2},
        "data": data,
        "optim": {"iterations": 100},
        "log": {"checkpoint_every": 100, "val_every": 100, "log_every": 50, "tensorboard": False},
    }


def section_memory(ctx: Context) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        _tree(root, IMAGES)
        for workers in (0, 2):
            cfg = Path(tmp) / f"w{workers}.yaml"
            cfg.write_text(yaml.safe_dump(_config(root, workers)))
            out = Path(tmp) / f"run{workers}"
            cmd = [sys.executable, "-m", "twostage", "train", str(cfg), "--out", str(out)]
            try:
                wall, peak, _ = run_polled(cmd)
            except RuntimeError as exc:  # num_workers not known to this trainer
                rows.append({"workers": workers, "error": str(exc)[-300:]})
                continue
            rows.append(
                {
                    "images": IMAGES,
                    "size": f"{WIDTH}×{HEIGHT}",
                    "workers": workers,
                    "iterations": 100,
                    "seconds": wall,
                    "peak_rss_gb": peak / 1e9,
                    "target_gb": TARGET_GB,
                }
            )
    return rows


def render_memory(rows: list[Row]) -> list[str]:
    return table(
        ["images", "workers", "100 iterations (s)", "peak RSS, all processes (GB)", "target"],
        [
            [
                f"{r.get('images', '')} × {r.get('size', '')}",
                str(r["workers"]),
                fmt(r.get("seconds"), ".0f"),
                fmt(r.get("peak_rss_gb"), ".2f"),
                f"< {TARGET_GB:g} GB"
                if "peak_rss_gb" not in r
                else ("met" if r["peak_rss_gb"] < TARGET_GB else "**missed**"),
            ]
            for r in rows
        ],
    )
