"""MATLAB's `imresize(A, scale, 'bicubic')`, exactly, for numpy images and torch tensors.

DIV2K's LR images and the paper's intermediate domains (bicubic ↓2, ↓4) were made with MATLAB,
so the resize must match it, not PIL/OpenCV/torch bicubic (different kernel support, no
antialiasing, other sizes). What MATLAB does, and what this module does:

- cubic kernel with a = -0.5, width 4;
- when downscaling (scale < 1) the kernel is stretched by 1/scale (width 4/scale): antialiasing;
- output pixel x (1-based) samples input position u = x/scale + 0.5·(1 - 1/scale);
- the weights of each output pixel are normalised to sum 1;
- out-of-range taps are mirrored (symmetric padding: ..., 2, 1 | 1, 2, ... | n, n-1, ...);
- output size ceil(in·scale); with an explicit size, scale = out/in per dimension;
- separable: the dimension with the smaller scale is resized first (rows on a tie);
- integer images keep their class after *each* pass (MATLAB's imresizemex returns the input
  class), so a uint8 image is rounded half away from zero and clipped between the two passes.

Weights and tap indices are computed once per dimension (float64, as MATLAB) and applied as a
weighted sum of gathered rows/columns: vectorised, on the tensor's own device for torch.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import torch

from twostage.errors import UserError

__all__ = ["contributions", "cubic", "imresize", "output_size"]

KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`), float64."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out×P float64) and 0-based input indices (out×P int64) for one dimension.

    Mirrors MATLAB's `contributions` with antialiasing on: taps beyond the border are mirrored,
    and taps whose weight is zero for every output pixel are dropped (they change nothing).
    """
    if scale < 1:
        width = KERNEL_WIDTH / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * x)
    else:
        width = KERNEL_WIDTH
        kernel = cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, may be outside
    weights = kernel(u[:, None] - idx)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(idx.astype(np.int64) - 1, mirror.size)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep].astype(np.int64)


def output_size(
    in_size: tuple[int, int], scale: float | None, size: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """MATLAB's output size and per-dimension scale: (out_h, out_w), (scale_h, scale_w)."""
    if (scale is None) == (size is None):
        raise UserError("imresize: give exactly one of scale and size")
    h, w = in_size
    if h < 1 or w < 1:
        raise UserError(f"imresize: cannot resize an empty image of size {h}x{w}")
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise UserError(f"imresize: scale must be a positive number, got {scale!r}")
        out = (math.ceil(scale * h), math.ceil(scale * w))
        return out, (float(scale), float(scale))
    assert size is not None
    out_h, out_w = (int(s) for s in size)
    if out_h < 1 or out_w < 1:
        raise UserError(f"imresize: size must be positive, got {tuple(size)!r}")
    return (out_h, out_w), (out_h / h, out_w / w)


def _round_half_away(x: np.ndarray | torch.Tensor, high: float):
    """Round half away from zero and clip to [0, high] (inputs of integer images are >= 0)."""
    if isinstance(x, torch.Tensor):
        return torch.clamp(torch.sign(x) * torch.floor(torch.abs(x) + 0.5), 0, high)
    return np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5), 0, high)


def _resize_numpy(img: np.ndarray, out: tuple[int, int], scales: tuple[float, float]) -> np.ndarray:
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: expected an H×W or H×W×C array, got shape {img.shape}")
    dtype = img.dtype
    if np.issubdtype(dtype, np.floating):
        high = None
    elif dtype in (np.uint8, np.uint16):
        high = float(np.iinfo(dtype).max)
    else:
        raise TypeError(f"imresize: unsupported dtype {dtype} (use float, uint8 or uint16)")
    x = img.astype(np.float64)
    for axis in _order(scales):
        weights, indices = contributions(img.shape[axis], out[axis], scales[axis])
        shape = [1] * x.ndim
        shape[axis] = -1
        acc = np.zeros((*x.shape[:axis], out[axis], *x.shape[axis + 1 :]), dtype=np.float64)
        for p in range(weights.shape[1]):
            acc += weights[:, p].reshape(shape) * np.take(x, indices[:, p], axis=axis)
        x = acc if high is None else _round_half_away(acc, high)
    return x.astype(dtype)


def _resize_torch(
    t: torch.Tensor, out: tuple[int, int], scales: tuple[float, float]
) -> torch.Tensor:
    if t.ndim < 2:
        raise ValueError(f"imresize: expected a (..., H, W) tensor, got shape {tuple(t.shape)}")
    dtype = t.dtype
    if dtype in (torch.float32, torch.float64):
        work, high = dtype, None
    elif dtype.is_floating_point:  # half precision: accumulate in float32
        work, high = torch.float32, None
    elif dtype == torch.uint8:
        work, high = torch.float64, 255.0
    else:
        raise TypeError(f"imresize: unsupported tensor dtype {dtype}")
    x = t.to(work)
    for axis in _order(scales):
        dim = x.ndim - 2 + axis
        weights, indices = contributions(t.shape[dim], out[axis], scales[axis])
        w = torch.from_numpy(weights).to(device=t.device, dtype=work)
        idx = torch.from_numpy(indices).to(device=t.device)
        shape = [1] * x.ndim
        shape[dim] = -1
        acc = None
        for p in range(w.shape[1]):
            term = w[:, p].reshape(shape) * x.index_select(dim, idx[:, p])
            acc = term if acc is None else acc + term
        assert acc is not None
        x = acc if high is None else _round_half_away(acc, high)
    return x.to(dtype)


def _order(scales: tuple[float, float]) -> list[int]:
    """MATLAB resizes the dimension with the smaller scale first (stable: rows on a tie)."""
    return sorted(range(2), key=lambda k: scales[k])


@overload
def imresize(
    img: np.ndarray, scale: float | None = None, *, size: tuple[int, int] | None = None
) -> np.ndarray: ...
@overload
def imresize(
    img: torch.Tensor, scale: float | None = None, *, size: tuple[int, int] | None = None
) -> torch.Tensor: ...
def imresize(img, scale=None, *, size=None):
    """MATLAB `imresize(img, scale, 'bicubic')` (or to `size=(h, w)`); exactly one of the two.

    numpy H×W or H×W×C: float in → same float dtype out (computed in float64); uint8/uint16 in →
    same dtype, rounded half away from zero after each pass as MATLAB does. torch (..., H, W):
    float32/float64 computed in that dtype, on the tensor's device; differentiable.
    """
    if isinstance(img, torch.Tensor):
        if img.ndim < 2:
            raise ValueError(f"imresize: expected (..., H, W), got shape {tuple(img.shape)}")
        out, scales = output_size((img.shape[-2], img.shape[-1]), scale, size)
        return _resize_torch(img, out, scales)
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize: expected an H×W or H×W×C array, got shape {arr.shape}")
    out, scales = output_size((arr.shape[0], arr.shape[1]), scale, size)
    return _resize_numpy(arr, out, scales)
