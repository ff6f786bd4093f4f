"""Training batches: random aligned patches, and per-patch family batches degraded afresh."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from twostage.data.pairs import Pair, PairSet
from twostage.errors import UserError
from twostage.ops.degrade import derive_seed, get_preset
from twostage.ops.realistic import Realistic, degrade_batch


def random_batch(
    pairs: Sequence[Pair] | PairSet,
    *,
    batch_size: int,
    patch_size: int,
    rng: np.random.Generator,
    augment: bool = True,
    scale: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """B random aligned patches: input B×3×p×p and target B×3×(p·s)×(p·s), float32 [0, 1].

    Each sample picks an image uniformly, a uniform input patch position, and (with augment)
    a horizontal flip, vertical flip and transpose (90° rotation) with probability 1/2 each,
    applied identically to input and target (BasicSR's `augment`). Crops stay uint8 until one
    conversion of the whole batch. An input smaller than the patch raises UserError naming it.
    """
    if not len(pairs):
        raise UserError("cannot draw a batch from an empty dataset")
    s = pairs.scale if scale is None and isinstance(pairs, PairSet) else scale
    if s is None:
        first = pairs[0]
        s = first.target.shape[0] // first.input.shape[0]
    p, q = patch_size, patch_size * s
    index = rng.integers(0, len(pairs), size=batch_size)
    crops_in, crops_tg = [], []
    for i in index:
        pair = pairs[int(i)]
        h, w = pair.input.shape[:2]
        if h < p or w < p:
            raise UserError(
                f"image {pair.name} (input {h}×{w}) is smaller than the "
                f"{p}×{p} training patch; lower the patch size or drop the image"
            )
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        a = pair.input[y : y + p, x : x + p]
        b = pair.target[y * s : y * s + q, x * s : x * s + q]
        if augment:
            hflip, vflip, transpose = rng.random(3) < 0.5
            if hflip:
                a, b = a[:, ::-1], b[:, ::-1]
            if vflip:
                a, b = a[::-1], b[::-1]
            if transpose:
                a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
        crops_in.append(a)
        crops_tg.append(b)
    return _to_batch(crops_in), _to_batch(crops_tg)


def _to_batch(crops: list[np.ndarray]) -> torch.Tensor:
    """Stack H×W×3 crops (uint8 or float32) into one contiguous B×3×H×W float32 tensor."""
    if all(c.dtype == np.uint8 for c in crops):
        batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    else:
        batch = torch.from_numpy(
            np.stack(
                [
                    c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else c.astype(np.float32)
                    for c in crops
                ]
            )
        )
        batch = batch.permute(0, 3, 1, 2)
    return batch.contiguous()


# --------------------------------------------------------------------------------------------
# Per-patch families: the pairs hold (target, HR); the input is degraded afresh for every patch


def per_patch_pair(name: str, hr: np.ndarray, target: np.ndarray | None) -> Pair:
    """A per-patch training pair, flipped: input = the stage's target (None: the HR itself),
    target = the HR image that `fresh_batch` degrades afresh for every patch."""
    return Pair(name, hr if target is None else target, hr)


def per_patch_family(preset: str) -> Realistic:
    """The family of a per-patch preset (`data.train.per_patch`); other presets → UserError."""
    family = get_preset(preset).family
    if family is None:
        raise UserError(
            f"data.train.per_patch: preset {preset} is not a per-patch family (e.g. realistic)"
        )
    return family


def fresh_batch(
    pairs: PairSet,
    *,
    preset: str,
    scale: int,
    batch_size: int,
    patch_size: int,
    rng: np.random.Generator,
    seed: int,
    iteration: int,
    first_index: int,
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of a per-patch family: aligned (target, HR) crops as `random_batch` draws them
    from per_patch_pair's, then input = `degrade_batch(HR crop)` at ×`scale`, drawn from
    (derive_seed(seed, "per-patch"), iteration, first_index + i): a stream apart from `rng`'s."""
    family = per_patch_family(preset)
    target_patch = patch_size * scale // pairs.scale
    y, hr = random_batch(
        pairs, batch_size=batch_size, patch_size=target_patch, rng=rng, augment=augment
    )
    x = degrade_batch(
        hr,
        scale=scale,
        seed=derive_seed(seed, "per-patch"),
        iteration=iteration,
        first_index=first_index,
        family=family,
    )
    return x.float().contiguous(), y
