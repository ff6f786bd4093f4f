"""A shipped model on the held-out suite at a strength: the model card's "Results" rows.

    PYTHONPATH=src python benchmarks/shipped_suite.py [--model blind-x4] [--split test|detail]
        [--strength 0.75] [--tta]

The embedded test photos (or the fine-detail images, `--split detail`), whole and mod-cropped
to the scale, degraded as `twostage run` degrades them at seed 0
(`data.split_images.degraded_image`) at the model's scale, restored by the model (a shipped
name or a bundle file) in fp32; PSNR (RGB, border = scale) against MATLAB bicubic of the same
input. This reports on held-out images; the default strength was chosen on the training images
(benchmarks/strength.py).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

import twostage
from twostage.data.samples import load_samples
from twostage.data.split_images import centre_crop, degraded_image
from twostage.evaluate import evaluate_arrays
from twostage.ops.degrade import SUITE
from twostage.runner.evaluation import bicubic_up


def margins(model, *, split: str = "test", strength=None, tta: bool = False) -> dict[str, float]:
    """{suite preset: mean PSNR over bicubic (dB)} of a loaded model (`twostage.load`)."""
    scale = model.scale
    out = {}
    for deg in SUITE:
        gains = []
        for name, img in load_samples(split):
            hr = centre_crop(img, crop=None, mod=scale)
            x = degraded_image(hr, deg, name=name, scale=scale, seed=0)
            y = model.restore(x.astype(np.float32), strength=strength, tta=tta)
            truth = hr.astype(np.float32) / 255.0
            ours = evaluate_arrays(y, truth, crop_border=scale, y_channel=False)["psnr"]
            up = bicubic_up(x, scale)
            base = evaluate_arrays(up, truth, crop_border=scale, y_channel=False)
            gains.append(ours - base["psnr"])
        out[deg] = statistics.mean(gains)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="blind-x4", help="a shipped name or a bundle file")
    parser.add_argument("--split", choices=("test", "detail"), default="test")
    parser.add_argument("--strength", type=float, default=None, help="default: the model's")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    model = twostage.load(args.model, device="cpu", precision="fp32")
    table = margins(model, split=args.split, strength=args.strength, tta=args.tta)
    for deg, margin in table.items():
        print(f"{deg:18s} {margin:+.2f} dB over bicubic")
    print(f"{'suite mean':18s} {statistics.mean(table.values()):+.2f} dB over bicubic")


if __name__ == "__main__":
    main()
