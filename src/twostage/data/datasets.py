"""Loading the pairs a config names (`open_dataset` of a `DatasetSpec`, specs.py).

Every dataset is a `PairSet` (pairs.py). The kinds: the image kinds (samples, photos, div2k,
realsr: HR images listed and made into pairs lazily, made.py, as the runner makes its splits);
paired folders (folders.py); a folder of HR images degraded by a preset (synthetic.py).
Training batches are drawn by batches.py. This module also re-exports that API, so that
`twostage.data.datasets` stays the one name to import datasets from.
"""

from __future__ import annotations

from twostage.data.batches import fresh_batch, per_patch_pair, random_batch
from twostage.data.folders import div2k, index_by_stem, paired_folders, realsr, strip_suffixes
from twostage.data.made import made_pairs
from twostage.data.pairs import Pair, PairSet
from twostage.data.specs import (
    KINDS,
    DatasetSpec,
    Div2kData,
    FoldersData,
    ImageData,
    PhotosData,
    RealsrData,
    SamplesData,
    SyntheticData,
    per_patch,
)
from twostage.data.split_images import centre_crop
from twostage.data.synthetic import retarget, synthetic

__all__ = [
    "KINDS",
    "DatasetSpec",
    "Div2kData",
    "FoldersData",
    "ImageData",
    "Pair",
    "PairSet",
    "PhotosData",
    "RealsrData",
    "SamplesData",
    "SyntheticData",
    "centre_crop",
    "div2k",
    "fresh_batch",
    "index_by_stem",
    "made_pairs",
    "open_dataset",
    "paired_folders",
    "per_patch",
    "per_patch_pair",
    "random_batch",
    "realsr",
    "retarget",
    "strip_suffixes",
    "synthetic",
]


def open_dataset(spec: DatasetSpec) -> PairSet:
    """Load the pairs a spec describes (specs.py: one dataclass per kind)."""
    if isinstance(spec, ImageData):
        return made_pairs(spec)
    if isinstance(spec, SyntheticData):
        return synthetic(
            spec.root,
            preset=spec.preset,
            scale=spec.scale,
            seed=spec.seed,
            target_domain=spec.target_domain,
            cache_dir=spec.cache_dir,
            limit=spec.limit,
        )
    pairs = paired_folders(spec.input_dir, spec.target_dir, scale=spec.scale, limit=spec.limit)
    if spec.target_domain is not None:
        pairs = retarget(pairs, spec.target_domain, seed=spec.seed)
    return pairs
