"""The shipped blind-x4 on the held-out suite at a strength: the model card's "Results" rows.

    PYTHONPATH=src python benchmarks/shipped_suite.py [--strength 0.75] [--tta]

The three embedded test photos, whole and mod-cropped to 4, degraded as `twostage run` degrades
them at seed 0 (`data.split_images.degraded_image`), restored by the shipped model in fp32;
PSNR (RGB, border 4) against MATLAB bicubic ×4 of the same input. This reports on the test
photos; the default strength was chosen on the training images (benchmarks/strength.py).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, default=None, help="default: the model's")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    model = twostage.load("blind-x4", device="cpu", precision="fp32")
    margins = {}
    for deg in SUITE:
        gains = []
        for name, img in load_samples("test"):
            hr = centre_crop(img, crop=None, mod=4)
            x = degraded_image(hr, deg, name=name, scale=4, seed=0)
            y = model.restore(x.astype(np.float32), strength=args.strength, tta=args.tta)
            truth = hr.astype(np.float32) / 255.0
            ours = evaluate_arrays(y, truth, crop_border=4, y_channel=False)["psnr"]
            base = evaluate_arrays(bicubic_up(x, 4), truth, crop_border=4, y_channel=False)
            gains.append(ours - base["psnr"])
        margins[deg] = statistics.mean(gains)
        print(f"{deg:18s} {margins[deg]:+.2f} dB over bicubic", flush=True)
    print(f"{'suite mean':18s} {statistics.mean(margins.values()):+.2f} dB over bicubic")


if __name__ == "__main__":
    main()
