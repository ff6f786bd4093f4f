"""The model card's crops: a face and fine print, restored at three strengths.

    PYTHONPATH=src python scripts/card_crops.py [--model blind-x4] [--out docs/crops-blind-x4.png]

Two held-out images, never trained on: the astronaut's face (a test photo) as a small JPEG
portrait (MATLAB bicubic ↓s, JPEG 70), and the scanned page of print (the fine-detail split) as
a soft photo of print (Gaussian blur σ 1.3, bicubic ↓s, JPEG 80), where s is the model's scale.
Each row shows, at 2× nearest-neighbour zoom: bicubic interpolation of the input, the model at
STRENGTHS (its default strength among them), and the original; each tile is labelled with its
PSNR (dB, RGB) over the whole image, so the crop is not the only evidence.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import twostage
from twostage.data.samples import load_samples
from twostage.data.split_images import centre_crop
from twostage.ops.degrade import degrade
from twostage.ops.metrics import psnr
from twostage.ops.resize import imresize
from twostage.ops.steps import Blur, Jpeg, Preset, Resize

FACE = Preset(name="jpeg-portrait", steps=(Resize("bicubic"), Jpeg(quality=70)))
PRINT = Preset(
    name="soft-print",
    steps=(Blur(kernel="gaussian", sigma=1.3), Resize("bicubic"), Jpeg(quality=80)),
)
# (split, image, preset, crop box in HR pixels: top, left, side)
CASES = (("test", "astronaut", FACE, (40, 150, 160)), ("detail", "page", PRINT, (20, 20, 160)))
ZOOM = 2


def _image(split: str, name: str, scale: int) -> np.ndarray:
    img = dict(load_samples(split))[name]
    return centre_crop(img, crop=None, mod=scale).astype(np.float32) / 255.0


def _tile(img: np.ndarray, box: tuple[int, int, int], label: str) -> Image.Image:
    top, left, side = box
    crop = np.clip(img[top : top + side, left : left + side], 0.0, 1.0)
    tile = Image.fromarray((crop * 255.0 + 0.5).astype(np.uint8))
    tile = tile.resize((side * ZOOM, side * ZOOM), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, tile.width, 14), fill=(0, 0, 0))
    draw.text((3, 1), label, fill=(255, 255, 255))
    return tile


def _row(model, strengths, split, name, preset, box) -> list[Image.Image]:
    scale = model.scale
    hr = _image(split, name, scale)
    x = degrade(hr, preset, scale=scale, seed=0)
    score = lambda y: psnr(np.clip(y, 0, 1), hr, crop_border=scale)  # noqa: E731
    bicubic = imresize(x, float(scale))
    tiles = [_tile(bicubic, box, f"bicubic {score(bicubic):.2f} dB")]
    for s in strengths:
        y = model.restore(x, strength=s)
        mark = " (default)" if s == model.strength else ""
        tiles.append(_tile(y, box, f"s={s:g}{mark} {score(y):.2f} dB"))
    tiles.append(_tile(hr, box, f"original ({name})"))
    return tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="blind-x4", help="a shipped name or a bundle file")
    parser.add_argument("--strengths", type=float, nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model = twostage.load(args.model, device="cpu", precision="fp32")
    strengths = args.strengths or sorted({0.0, model.strength, 1.0})
    rows = [_row(model, strengths, *case) for case in CASES]
    w, h = rows[0][0].size
    sheet = Image.new("RGB", (w * len(rows[0]), h * len(rows)), (255, 255, 255))
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (c * w, r * h))
    out = args.out or Path(f"docs/crops-{Path(args.model).stem}.png")
    sheet.save(out, optimize=True)
    print(f"wrote {out} ({sheet.width}×{sheet.height})")


if __name__ == "__main__":
    main()
