"""Small ×2 folders of real photo crops for the training tests (HR 64×64 crops, LR their
MATLAB-bicubic ↓2): quick to open in every subprocess, unlike the embedded samples."""

from __future__ import annotations

from pathlib import Path

import skimage.data
from PIL import Image

from twostage.ops.resize import imresize


def write_photo_pairs(root: Path) -> list[str]:
    """Write train (2 pairs) and val (1 pair) folders under `root`; return the `--set`
    overrides that point a config's data.train / data.val at them."""
    photos = {
        "train": [
            ("astronaut", skimage.data.astronaut()[40:104, 200:264]),
            ("coffee", skimage.data.coffee()[100:164, 150:214]),
        ],
        "val": [("chelsea", skimage.data.chelsea()[100:164, 150:214])],
    }
    for split, items in photos.items():
        for name, hr in items:
            for kind, img in (("hr", hr), ("lr", imresize(hr, 0.5))):
                (root / f"{split}_{kind}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / f"{split}_{kind}" / f"{name}.png")
    return [
        f"data.{s}={{kind: folders, input_dir: {root}/{s}_lr, target_dir: {root}/{s}_hr, scale: 2}}"
        for s in ("train", "val")
    ]
