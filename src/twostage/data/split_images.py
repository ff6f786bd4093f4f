"""The images of a recipe's split: centre crops, their degraded and intermediate-domain images.

The runner's data (data/splits.py) and a config's image-kind dataset (made.py) make
their images with these functions, so that both see the same pixels.
"""

from __future__ import annotations

import numpy as np

from twostage.ops.degrade import degrade, derive_seed, get_preset, intermediate


def centre_crop(img: np.ndarray, *, crop: int | None, mod: int) -> np.ndarray:
    """Centre-crop to at most `crop` (if given), then mod-crop to a multiple of `mod`."""
    h, w = img.shape[:2]
    if crop is not None:
        ch, cw = min(h, crop), min(w, crop)
        top, left = (h - ch) // 2, (w - cw) // 2
        img = img[top : top + ch, left : left + cw]
        h, w = ch, cw
    return np.ascontiguousarray(img[: h - h % mod, : w - w % mod])


def degraded_image(hr: np.ndarray, degradation: str, *, name: str, scale: int, seed: int):
    """A recipe's input: the degradation's preset on HR, seeded by degradation and image."""
    preset = get_preset(degradation)
    return degrade(
        hr,
        preset,
        scale=scale if preset.resizes else 1,
        seed=derive_seed(seed, f"{degradation}:{name}"),
    )


def domain_image(hr: np.ndarray, domain: str, *, name: str, seed: int) -> np.ndarray:
    """A recipe's intermediate-domain image of HR, seeded by domain and image."""
    return intermediate(domain, hr, seed=derive_seed(seed, f"{domain}:{name}"))
