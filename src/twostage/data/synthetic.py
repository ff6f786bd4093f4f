"""Pairs made from HR images with a degradation preset, and HR targets moved to a domain.

synthetic: HR images and a degradation preset, input = `degrade(hr)` with a per-image seed
`derive_seed(seed, name)`; target = HR or `intermediate(target_domain, hr)`; optionally cached
to disk (PNG, 16-bit for float data) and reused. retarget: any PairSet's HR targets replaced by
an intermediate domain (stage 1's training pairs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from twostage.data.folders import images_in, limited, read_stored
from twostage.data.pairs import Pair, PairSet
from twostage.errors import UserError
from twostage.ops.degrade import (
    DOMAINS,
    Domain,
    Preset,
    degrade,
    derive_seed,
    get_preset,
    intermediate,
    mod_crop,
    preset_to_dict,
)
from twostage.ops.imageio import to_uint8, write_image


def _domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise UserError(f"unknown target domain {name!r}; choose one of {', '.join(DOMAINS)}")
    return DOMAINS[name]


def _pair_scale(preset: Preset, scale: int, target_domain: str | None) -> int:
    if target_domain is None:
        return scale
    factor = _domain(target_domain).factor
    if scale % factor:
        raise UserError(
            f"target domain {target_domain} (↓{factor}) does not fit preset "
            f"{preset.name} at scale {scale}"
        )
    return scale // factor


def _stored(img: np.ndarray, float_data: bool) -> np.ndarray:
    return np.ascontiguousarray(img, dtype=np.float32) if float_data else to_uint8(img)


def synthetic(
    hr_images: Sequence[tuple[str, np.ndarray]] | Path | str,
    *,
    preset: str | Preset,
    scale: int | None = None,
    seed: int = 0,
    target_domain: str | None = None,
    cache_dir: Path | None = None,
    limit: int | None = None,
    name: str | None = None,
) -> PairSet:
    """Pairs made from HR images (a folder, or (name, H×W×3 array) pairs) with a preset.

    HR is mod-cropped to a multiple of s. Input: `degrade(hr, preset, seed=derive_seed(seed,
    name))`. Target: HR, or `intermediate(target_domain, hr, seed=derive_seed(seed, name +
    "/target"))` (independent noise for the blur9 target). With `cache_dir`, each pair is
    written once under a folder named by a hash of (preset, scale, seed, domain) and read back
    afterwards; file names carry a hash of the HR pixels, so a changed image is recomputed.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    s = p.scale if scale is None else scale
    pair_scale = _pair_scale(p, s, target_domain)
    if isinstance(hr_images, str | Path):
        folder = Path(hr_images)
        files = limited(images_in(folder, "HR"), limit)
        if not files:
            raise UserError(f"no images in {folder}")
        items: list[tuple[str, np.ndarray]] = [(f.stem, read_stored(f)) for f in files]
        set_name = name or f"{folder.name}-{p.name}"
    else:
        items = limited(list(hr_images), limit)
        set_name = name or f"synthetic-{p.name}"
    cache = None
    if cache_dir is not None:
        key = json.dumps(
            {"preset": preset_to_dict(p), "scale": s, "seed": seed, "target_domain": target_domain},
            sort_keys=True,
        )
        cache = Path(cache_dir) / hashlib.sha256(key.encode()).hexdigest()[:16]
    pairs = [
        _synthetic_pair(
            img_name, hr, p, scale=s, seed=seed, target_domain=target_domain, cache=cache
        )
        for img_name, hr in items
    ]
    return PairSet(pairs, scale=pair_scale, name=set_name)


def _synthetic_pair(
    img_name: str,
    hr: np.ndarray,
    preset: Preset,
    *,
    scale: int,
    seed: int,
    target_domain: str | None,
    cache: Path | None,
) -> Pair:
    """One pair of `synthetic`: read back from `cache` when it holds it, else made (and
    written there when there is a cache)."""
    hr = mod_crop(hr, scale)
    hr_hash = hashlib.sha256(np.ascontiguousarray(hr).tobytes()).hexdigest()[:10]
    paths = None
    if cache is not None:
        paths = (
            cache / "input" / f"{img_name}-{hr_hash}.png",
            cache / "target" / f"{img_name}-{hr_hash}.png",
        )
        if paths[0].is_file() and paths[1].is_file():
            return Pair(img_name, read_stored(paths[0]), read_stored(paths[1]))
    x = degrade(hr, preset, scale=scale, seed=derive_seed(seed, img_name))
    lr = _stored(x, preset.float_output)
    if target_domain is None:
        target = hr if hr.dtype == np.uint8 else np.asarray(hr, dtype=np.float32)
    else:
        t = intermediate(target_domain, hr, seed=derive_seed(seed, img_name + "/target"))
        target = _stored(t, _domain(target_domain).bit_depth == 16)
    if paths is not None:
        write_image(paths[0], lr, bit_depth=8 if lr.dtype == np.uint8 else 16)
        write_image(paths[1], target, bit_depth=8 if target.dtype == np.uint8 else 16)
    return Pair(img_name, lr, target)


def retarget(pairs: PairSet, target_domain: str, *, seed: int = 0) -> PairSet:
    """Replace each HR target by `intermediate(target_domain, hr)`: stage 1's training pairs.

    E.g. DIV2K unknown ×4 (input, HR) → (input, MATLAB-bicubic ↓4 of HR) for the ×1 mapping.
    """
    factor = _domain(target_domain).factor
    if pairs.scale % factor:
        raise UserError(
            f"target domain {target_domain} (↓{factor}) does not fit dataset "
            f"{pairs.name} at scale {pairs.scale}"
        )
    out = []
    for p in pairs:
        t = intermediate(target_domain, p.target, seed=derive_seed(seed, p.name + "/target"))
        out.append(Pair(p.name, p.input, _stored(t, _domain(target_domain).bit_depth == 16)))
    return PairSet(out, scale=pairs.scale // factor, name=f"{pairs.name}-to-{target_domain}")
