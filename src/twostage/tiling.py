"""Running a network over an image of any size, whole or tile by tile, in bounded memory.

**Tiling.** `restore(img, tile=T, tile_pad=P)` cuts the input into T×T tiles, runs each tile
with P pixels of real image context on every side (less at the image border, where the network
sees the same zero padding as on the whole image), crops the context away from the output
(P × scale pixels) and pastes the core into an output buffer allocated once. With P at least
the network's receptive-field radius, tiled and whole-image results agree up to float rounding
and RCAN's channel attention, whose global average pool sees only the tile (≥ 50 dB, tested).

**Self-ensemble** (`self_ensemble`, `restore --tta`): each (padded) tile is run in its 8
flips and 90° rotations, each output is turned back and the 8 are averaged: 8× the time, one
more output-sized tile of memory. Tiled and whole results agree as without it.

**`tile="auto"`** (rule in `auto_tile`): activation memory per input pixel is estimated from
each stage's width F and scale s as 8·F floats for the body (about six F-channel maps live at
once in a residual block, plus slack) and 2·F·s² floats for the pixel-shuffle upsampler (its
conv output and the shuffled copy at output size), times the number of pixels that stage sees
per input pixel; the tile is the largest square (plus its pad) that fits in half of the free
memory (psutil's available memory on CPU, capped at 1 GiB since bigger tiles are not faster
there; `torch.cuda.mem_get_info` on GPU). An image that fits whole is not tiled. Measured on
CPU, the estimate is within ±25 % of the peak RSS growth of rcan-paper/edsr-paper tiles of
96–256 pixels; the factor 2 of head-room covers the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import psutil
import torch
from torch import nn

from twostage.errors import UserError, short
from twostage.limits import MIN_TILE
from twostage.ops.imageio import to_uint8, to_uint16
from twostage.ops.progress import bar

__all__ = [
    "Runner",
    "Tile",
    "activation_floats_per_pixel",
    "auto_tile",
    "free_memory",
    "restore_image",
    "self_ensemble",
    "stage_width",
]

CPU_TILE_BUDGET = 1 << 30  # bytes; larger CPU tiles only cost memory
DEFAULT_WIDTH = 64  # feature channels assumed for a network whose width cannot be read

Tile = int | Literal["auto"] | None
Runner = Callable[[np.ndarray], np.ndarray]  # 1×3×h×w float32 → 1×3×(h·s)×(w·s) float32


def stage_width(model: nn.Module) -> int:
    """Feature channels of a network: `spec.n_feats`, else the widest conv input."""
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "n_feats"):
        return int(spec.n_feats)
    widths = [m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return max(widths, default=DEFAULT_WIDTH)


def activation_floats_per_pixel(stages: list[tuple[int, int]]) -> float:
    """Peak float32 values held per *input* pixel by networks (width F, scale s) run in turn.

    See the module docstring: 8·F + 2·F·s² per pixel a stage sees, the max over stages, plus
    the tile's input and output (3 + 3·S² for total scale S).
    """
    pixels = 1.0  # pixels seen by the current stage per input pixel
    peak = 0.0
    for width, scale in stages:
        peak = max(peak, pixels * (8 * width + 2 * width * scale * scale))
        pixels *= scale * scale
    return peak + 3.0 * (1.0 + pixels)


def free_memory(device: torch.device) -> int:
    """Bytes a tile may use: half the free GPU memory, or half of available RAM (≤ 1 GiB)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 2
    return min(psutil.virtual_memory().available // 2, CPU_TILE_BUDGET)


def auto_tile(
    height: int, width: int, *, floats_per_pixel: float, tile_pad: int, budget: int
) -> int | None:
    """The largest tile (a multiple of 8, at least 16) whose padded square fits `budget` bytes.

    None when the whole image fits at once (no tiling needed). A pad that leaves no room for
    a 16-pixel tile in a budget that holds one is an error naming --tile-pad.
    """
    bytes_per_pixel = 4.0 * floats_per_pixel
    if height * width * bytes_per_pixel <= budget:
        return None
    pad = _tile_pad(tile_pad, height, width)
    fits = int(math.sqrt(budget / bytes_per_pixel))
    if fits - 2 * pad < 16 <= fits:
        raise UserError(
            f"--tile-pad {tile_pad}: a tile with that much context needs more than the "
            f"{budget / 2**20:.0f} MiB of free memory it may use; lower --tile-pad "
            f"(at most {max(0, (fits - 16) // 2)} here)"
        )
    tile = max(16, (fits - 2 * pad) // 8 * 8)
    return None if tile >= max(height, width) else tile


def self_ensemble(run: Runner) -> Runner:
    """`run` made to average its outputs over the 8 flips and 90° rotations of each patch
    (each output turned back first): test-time augmentation, 8 runs per patch."""

    def ensemble(patch: np.ndarray) -> np.ndarray:
        total: np.ndarray | None = None
        for turns in range(4):
            for flip in (False, True):
                x = np.rot90(patch, turns, axes=(2, 3))
                y = run(np.ascontiguousarray(x[..., ::-1] if flip else x))
                y = np.rot90(y[..., ::-1] if flip else y, -turns, axes=(2, 3))
                total = y.astype(np.float32) if total is None else total + y
        assert total is not None
        return total / 8.0

    return ensemble


def _tiles(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Core regions (y0, y1, x0, x1) covering the image, row by row."""
    return [
        (y0, min(y0 + tile, height), x0, min(x0 + tile, width))
        for y0 in range(0, height, tile)
        for x0 in range(0, width, tile)
    ]


def restore_image(
    run: Runner,
    img: np.ndarray,
    *,
    scale: int,
    tile: int | None,
    tile_pad: int,
    progress: bool = False,
    dtype: type = np.float32,
) -> np.ndarray:
    """Run `run` over a float image H×W×3, whole or tile by tile; returns (H·s)×(W·s)×3 float32
    in [0, 1], or, for `dtype` uint8 or uint16, each tile quantised as `write_image` would.

    The output buffer is allocated once; each tile's padded input and output are freed before
    the next, so peak memory is the input, the output buffer and one tile's activations. A tile
    pad larger than the image is the whole image (`_tile_pad`).
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"expected an H×W×3 image, got shape {img.shape}")
    if tile is not None and tile < MIN_TILE:
        raise UserError(f"--tile must be 'auto' or at least {MIN_TILE}, got {tile}")
    height, width = img.shape[:2]
    tile_pad = _tile_pad(tile_pad, height, width)
    if tile_pad == max(height, width):
        tile = None  # every tile would run the whole image: run it once
    quantise = {np.uint8: to_uint8, np.uint16: to_uint16}.get(dtype)
    img = np.ascontiguousarray(img, dtype=np.float32)
    out = np.empty((height * scale, width * scale, 3), dtype=dtype)
    regions = _tiles(height, width, tile) if tile else [(0, height, 0, width)]
    tiles = bar(regions, quiet=not progress or len(regions) == 1, desc="tiles", leave=False)
    for y0, y1, x0, x1 in tiles:
        py0, py1 = max(0, y0 - tile_pad), min(height, y1 + tile_pad)
        px0, px1 = max(0, x0 - tile_pad), min(width, x1 + tile_pad)
        patch = img[py0:py1, px0:px1].transpose(2, 0, 1)[None]
        result = run(np.ascontiguousarray(patch))
        expected = (1, 3, (py1 - py0) * scale, (px1 - px0) * scale)
        if result.shape != expected:
            raise UserError(
                f"the model returned shape {tuple(result.shape)} for an input of "
                f"{(1, 3, py1 - py0, px1 - px0)}; expected {expected} (scale {scale})"
            )
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        core = result[0, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale]
        if not np.isfinite(core).all():
            raise UserError(
                "the model produced NaN or Inf (broken or diverged weights); nothing written"
            )
        core = core.transpose(1, 2, 0)
        out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = quantise(core) if quantise else core
    if quantise is None:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _tile_pad(tile_pad: int, height: int, width: int) -> int:
    """`tile_pad` checked and clamped to the image's longer side: context past the image's
    edges does not exist, so a larger pad is the same as the whole image."""
    if not isinstance(tile_pad, int | np.integer) or isinstance(tile_pad, bool) or tile_pad < 0:
        raise UserError(f"--tile-pad must be an integer >= 0, got {short(tile_pad)}")
    return min(int(tile_pad), max(height, width))
