"""Which pairs a config names (`DatasetSpec`) and loading them (`open_dataset`).

Every dataset is a `PairSet` (pairs.py). The kinds: paired folders, DIV2K and RealSR V3 on disk
(folders.py); HR images degraded by a preset, the embedded samples among them (synthetic.py);
a recipe's split as the runner makes it (`split_pairs`, with split_images.py). Training batches
are drawn by batches.py. This module also re-exports that API, so that `twostage.data.datasets`
stays the one name to import datasets from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twostage.data.batches import fresh_batch, per_patch_pair, random_batch
from twostage.data.folders import div2k, index_by_stem, paired_folders, realsr, strip_suffixes
from twostage.data.pairs import Pair, PairSet
from twostage.data.samples import load_samples
from twostage.data.split_images import centre_crop, degraded_image, domain_image, instances
from twostage.data.synthetic import retarget, synthetic
from twostage.errors import UserError
from twostage.limits import MAX_SCALE
from twostage.ops.imageio import read_image

__all__ = [
    "DatasetSpec",
    "Pair",
    "PairSet",
    "centre_crop",
    "div2k",
    "fresh_batch",
    "index_by_stem",
    "open_dataset",
    "paired_folders",
    "per_patch_pair",
    "random_batch",
    "realsr",
    "retarget",
    "split_pairs",
    "strip_suffixes",
    "synthetic",
]

KINDS = ("samples", "folders", "div2k", "realsr", "synthetic", "split")


@dataclass
class DatasetSpec:
    """Which pairs to load. Fields a kind does not use are ignored.

    kind: samples (embedded photos + preset), folders (input_dir/target_dir), div2k (root,
    split train|valid, track bicubic|unknown), realsr (root, camera Canon|Nikon|both, split
    train|test), synthetic (root = a folder of HR images + preset), split (the embedded photos
    as a recipe's runner sees them: `split_pairs`). scale: the SR factor of the
    data (the preset's, DIV2K's X<s>, RealSR's folder). target_domain: replace the HR target
    by an intermediate domain (bicubic-x4, bicubic-x2, blur9). limit: load the first N only.
    """

    kind: str = "samples"
    root: Path | None = None
    input_dir: Path | None = None
    target_dir: Path | None = None
    split: str = "train"
    track: str = "unknown"
    camera: str = "both"
    preset: str = "gaussian-aniso"
    scale: int = 4
    seed: int = 0
    target_domain: str | None = None
    cache_dir: Path | None = None
    limit: int | None = None
    crop: int | None = None  # kind split: centre-crop each HR image to at most this side
    input_domain: str | None = None  # kind split: inputs made by this intermediate domain
    # kind split, a per-patch family preset (realistic): degrade every training patch afresh
    # (the pairs hold (target, HR); `fresh_batch` makes the input), instead of one per image
    per_patch: bool = False
    instances: int = 1  # kind split: K fixed degraded instances per image, named NAME~k

    def __post_init__(self) -> None:
        if not (isinstance(self.scale, int) and 1 <= self.scale <= MAX_SCALE):
            raise UserError(f"scale must be an integer from 1 to {MAX_SCALE}, got {self.scale!r}")


def _need(value: Path | None, field: str, kind: str) -> Path:
    if value is None:
        raise UserError(f"dataset kind {kind} needs {field}")
    return Path(value)


def open_dataset(spec: DatasetSpec) -> PairSet:
    """Load the pairs a spec describes (see DatasetSpec)."""
    kind = spec.kind
    if kind == "split":
        return split_pairs(spec)
    if kind in ("samples", "synthetic"):
        embedded = kind == "samples"
        return synthetic(
            load_samples(spec.split) if embedded else _need(spec.root, "root", kind),
            preset=spec.preset,
            scale=spec.scale,
            seed=spec.seed,
            target_domain=spec.target_domain,
            cache_dir=spec.cache_dir,
            limit=spec.limit,
            name=f"samples-{spec.split}-{Path(spec.preset).stem}" if embedded else None,
        )
    if kind == "folders":
        pairs = paired_folders(
            _need(spec.input_dir, "input_dir", kind),
            _need(spec.target_dir, "target_dir", kind),
            scale=spec.scale,
            limit=spec.limit,
        )
    elif kind == "div2k":
        pairs = div2k(
            _need(spec.root, "root", kind),
            split=spec.split,
            track=spec.track,
            scale=spec.scale,
            limit=spec.limit,
        )
    elif kind == "realsr":
        pairs = realsr(
            _need(spec.root, "root", kind),
            camera=spec.camera,
            split=spec.split,
            scale=spec.scale,
            limit=spec.limit,
        )
    else:
        raise UserError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    if spec.target_domain is not None:
        pairs = retarget(pairs, spec.target_domain, seed=spec.seed)
    return pairs


# --------------------------------------------------------------------------------------------
# A recipe's split: the images the runner makes (data/splits.py uses the same functions)


def split_pairs(spec: DatasetSpec) -> PairSet:
    """Kind split: the first `limit` embedded photos of `split`, centre-cropped to `crop` and
    mod-cropped to `scale` (the recipe's); input: a stage-1 output folder (`input_dir`, PNGs
    named by image), an intermediate domain (`input_domain`) or the preset (`preset`); target:
    the HR image or `target_domain`. The runner trains on exactly these pairs."""
    items = instances(load_samples(spec.split)[: spec.limit], spec.instances)
    pairs = []
    for name, img in items:
        hr = centre_crop(img, crop=spec.crop, mod=spec.scale)
        if spec.per_patch:
            target = None
            if spec.target_domain is not None:
                target = domain_image(hr, spec.target_domain, name=name, seed=spec.seed)
            pairs.append(per_patch_pair(name, hr.astype(np.float32) / 255.0, target))
            continue
        if spec.input_dir is not None:
            x = read_image(Path(spec.input_dir) / f"{name}.png")[0]
        elif spec.input_domain is not None:
            x = domain_image(hr, spec.input_domain, name=name, seed=spec.seed)
        else:
            x = degraded_image(hr, spec.preset, name=name, scale=spec.scale, seed=spec.seed)
        if spec.target_domain is None:
            y = hr.astype(np.float32) / 255.0
        else:
            y = domain_image(hr, spec.target_domain, name=name, seed=spec.seed)
        pairs.append(Pair(name, x, y))
    if not pairs:
        raise UserError(f"dataset kind split: no images in the {spec.split} split")
    scale = pairs[0].target.shape[0] // pairs[0].input.shape[0]
    return PairSet(pairs, scale=scale, name=f"samples-{spec.split}")
