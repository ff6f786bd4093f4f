"""Degradation presets: declarative lists of small steps (blur, resize, noise, JPEG).

A `Preset` is data, not code: a list of frozen step dataclasses applied in order to a float
RGB image, with every random parameter drawn from `np.random.default_rng(seed)` in step order,
so that a (preset, scale, seed) triple always gives the same image. Users write their own
presets in YAML with the same fields (see `load_preset` and the README, "Degradations and
data").

Conventions (the README's preset table lists every number):

- Ranges are `(low, high)` pairs drawn uniformly per image; `low == high` is a fixed value.
  Lengths (σ, radius, kernel size) are in *input* (HR) pixels; intensities in [0, 1] units.
- Blur is a 2-D convolution with symmetric ("reflect": d c b a | a b c d, MATLAB's
  'symmetric') boundaries, computed by FFT in float64. Every kernel sums to 1.
- `Resize("bicubic")` is MATLAB `imresize` ↓s (twostage.ops.resize). `Resize("decimate")`
  keeps every s-th pixel starting at row/column `(s - 1) // 2`. A `Blur` directly before a
  decimation is sampled `(s - 1)/2 - (s - 1)//2` pixels off-centre (half a pixel for even s),
  so that LR pixel i sits at HR position `s·i + (s - 1)/2` in both axes: the same sampling
  grid as MATLAB bicubic, so the unknown-kernel inputs and their bicubic targets are aligned.
- Before any downscaling the HR image is cropped (bottom/right) to a multiple of s, so the
  output is exactly (H/s)×(W/s) (BasicSR's `mod_crop`).
- SR presets end on the uint8 grid (values k/255), like real LR PNGs. The blur presets
  (`float_output=True`) do not: their 40 dB BSNR noise has a standard deviation of about
  0.5–1 grey level, so rounding to 8 bits would add quantisation noise of the same size
  (variance 1/12 of a step²) and change the noise level the paper specifies. They stay float
  in memory and are written as 16-bit PNG.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from scipy.signal import fftconvolve

from twostage.errors import UserError, short
from twostage.limits import (
    MAX_ABS_BSNR,
    MAX_KERNEL,
    MAX_PIXELS,
    MAX_SCALE,
    MIN_POISSON_GAIN,
)
from twostage.ops.files import check_outputs, read_yaml, remove_stale_temps, write_text_atomic
from twostage.ops.imageio import expand_inputs, quantize, read_image, to_uint8, write_image
from twostage.ops.realistic import Realistic, degrade_array
from twostage.ops.resize import imresize

__all__ = [
    "DOMAINS",
    "PRESETS",
    "SUITE",
    "Blur",
    "Jpeg",
    "Noise",
    "Preset",
    "Realistic",
    "Resize",
    "Webp",
    "box_kernel",
    "degrade",
    "degrade_files",
    "derive_seed",
    "disk_kernel",
    "gaussian_kernel",
    "get_preset",
    "intermediate",
    "load_preset",
    "mod_crop",
    "motion_kernel",
    "preset_from_dict",
    "preset_to_dict",
    "presets_table",
    "sample_kernel",
    "save_preset",
]

Range = tuple[float, float]

BLUR_KERNELS = ("gaussian-aniso", "gaussian", "uniform", "disk", "motion")
RESIZE_METHODS = ("bicubic", "decimate")
NOISE_KINDS = ("gaussian", "bsnr", "poisson-gaussian")


def _check_range(
    owner: str, field: str, value: Any, *, low: float = 0.0, high: float = math.inf
) -> Range:
    """Validate a (low, high) pair within [low, high]; a single number is a fixed value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value, value)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(
            f"{owner}: {field} must be a number or a [low, high] pair, got {short(value)}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or lo < low or hi > high:
        bound = f" <= {high:g}" if math.isfinite(high) else ""
        raise UserError(
            f"{owner}: {field} must satisfy {low:g} <= low <= high{bound}, got {short(value)}"
        )
    return (lo, hi)


def _check_scale(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SCALE:
        raise UserError(f"{what} must be an integer from 1 to {MAX_SCALE}, got {short(value)}")
    return value


def _draw(rng: np.random.Generator, r: Range) -> float:
    """One uniform draw from a range; a fixed value draws nothing (keeps streams stable)."""
    return r[0] if r[0] == r[1] else float(rng.uniform(r[0], r[1]))


# --------------------------------------------------------------------------------------------
# Steps


@dataclass(frozen=True)
class Blur:
    """Convolve with one kernel drawn per image.

    kernel: "gaussian-aniso" (σ1, σ2 drawn independently from `sigma`, rotated by `angle`
    radians, measured from the +x (column) axis towards +y (rows)), "gaussian" (isotropic σ
    from `sigma`), "uniform" (size×size box), "disk" (defocus: a uniform disk of radius
    `radius`, area-sampled), "motion" (linear motion: a uniform line segment of `length`
    pixels at `angle`). size: odd kernel side in pixels; 0 = 2·ceil(3·σ_max)+1 for Gaussians
    (for "uniform" it is required; unused for "disk" and "motion"). A "gaussian" with a size but
    no sigma uses σ = size/6 (the window spans ±3σ). reference_scale: if set, the ranges (and a
    Gaussian's size) were chosen for that scale and are multiplied by s/reference_scale.
    """

    kernel: str = "uniform"
    size: int = 0
    sigma: Range | None = None
    angle: Range = (0.0, math.pi)
    radius: Range | None = None
    reference_scale: int | None = None
    length: Range | None = None

    def __post_init__(self) -> None:
        owner = "blur step"
        if self.kernel not in BLUR_KERNELS:
            raise UserError(
                f"{owner}: kernel must be one of {', '.join(BLUR_KERNELS)}, got {self.kernel!r}"
            )
        size = self.size
        if not isinstance(size, int) or size < 0 or (size and size % 2 == 0) or size > MAX_KERNEL:
            raise UserError(
                f"{owner}: size must be an odd integer from 1 to {MAX_KERNEL} (or 0 = auto), "
                f"got {short(size)}"
            )
        if self.sigma is not None:
            sigma = _check_range(owner, "sigma", self.sigma, high=MAX_KERNEL / 6)
            object.__setattr__(self, "sigma", sigma)
        if self.radius is not None:
            radius = _check_range(owner, "radius", self.radius, high=MAX_KERNEL / 2)
            object.__setattr__(self, "radius", radius)
        if self.length is not None:
            length = _check_range(owner, "length", self.length, high=MAX_KERNEL)
            object.__setattr__(self, "length", length)
        object.__setattr__(self, "angle", _check_range(owner, "angle", self.angle, low=-math.inf))
        if self.kernel in ("gaussian-aniso", "gaussian"):
            if self.sigma is None and not (self.kernel == "gaussian" and self.size):
                raise UserError(f"{owner}: kernel {self.kernel} needs sigma")
            if self.sigma is not None and self.sigma[0] <= 0:
                raise UserError(f"{owner}: sigma must be > 0, got {self.sigma!r}")
        if self.kernel == "uniform" and not self.size:
            raise UserError(f"{owner}: kernel uniform needs an odd size")
        if self.kernel == "disk" and (self.radius is None or self.radius[0] <= 0):
            raise UserError(f"{owner}: kernel disk needs radius > 0")
        if self.kernel == "motion" and (self.length is None or self.length[0] <= 0):
            raise UserError(f"{owner}: kernel motion needs length > 0")
        if self.reference_scale is not None and (
            not isinstance(self.reference_scale, int) or self.reference_scale < 1
        ):
            raise UserError(f"{owner}: reference_scale must be a positive integer")


@dataclass(frozen=True)
class Resize:
    """Downscale by the run's scale s: "bicubic" (MATLAB imresize) or "decimate" (s-fold)."""

    method: str = "bicubic"

    def __post_init__(self) -> None:
        if self.method not in RESIZE_METHODS:
            raise UserError(
                f"resize step: method must be one of {', '.join(RESIZE_METHODS)}, "
                f"got {self.method!r}"
            )


@dataclass(frozen=True)
class Noise:
    """Add noise, then clip to [0, 1].

    kind: "gaussian" (std drawn from `sigma`, [0, 1] units), "bsnr" (white Gaussian noise of
    variance var(image)/10^(bsnr/10), var over all pixels and channels of the image entering
    this step), "poisson-gaussian" (a·Poisson(x/a) + N(0, σ²), gain a from `gain`, read
    noise σ from `sigma`; signal-dependent variance a·x + σ²).
    """

    kind: str = "gaussian"
    sigma: Range = (0.0, 0.0)
    bsnr: float = 40.0
    gain: Range = (0.0, 0.0)

    def __post_init__(self) -> None:
        owner = "noise step"
        if self.kind not in NOISE_KINDS:
            raise UserError(
                f"{owner}: kind must be one of {', '.join(NOISE_KINDS)}, got {self.kind!r}"
            )
        object.__setattr__(self, "sigma", _check_range(owner, "sigma", self.sigma))
        gain = _check_range(owner, "gain", self.gain)
        if any(0 < g < MIN_POISSON_GAIN for g in gain):
            raise UserError(
                f"{owner}: gain must be 0 (no Poisson noise) or at least {MIN_POISSON_GAIN:g}, "
                f"got {short(self.gain)}"
            )
        object.__setattr__(self, "gain", gain)
        bsnr = self.bsnr
        if (
            isinstance(bsnr, bool)
            or not isinstance(bsnr, int | float)
            or not -MAX_ABS_BSNR <= bsnr <= MAX_ABS_BSNR
        ):
            raise UserError(
                f"{owner}: bsnr must be a number of dB from {-MAX_ABS_BSNR} to {MAX_ABS_BSNR}, "
                f"got {short(bsnr)}"
            )
        object.__setattr__(self, "bsnr", float(bsnr))


@dataclass(frozen=True)
class Jpeg:
    """JPEG-compress in memory (PIL, 4:2:0), quality drawn uniformly from the integer range."""

    quality: tuple[int, int] = (60, 95)

    def __post_init__(self) -> None:
        q = self.quality
        if isinstance(q, int) and not isinstance(q, bool):
            q = (q, q)
        try:
            lo, hi = (int(v) for v in q)
            ok = all(float(v) == int(v) for v in q) and 1 <= lo <= hi <= 100
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(
                f"{type(self).__name__.lower()} step: quality must be integers "
                f"1 <= low <= high <= 100, got {self.quality!r}"
            )
        object.__setattr__(self, "quality", (lo, hi))


@dataclass(frozen=True)
class Webp(Jpeg):
    """WebP-compress in memory (PIL, lossy), quality drawn uniformly from the integer range."""


Step = Blur | Resize | Noise | Jpeg | Realistic
STEP_TYPES: dict[str, type] = {
    "blur": Blur,
    "resize": Resize,
    "noise": Noise,
    "jpeg": Jpeg,
    "webp": Webp,
    "realistic": Realistic,  # Real-ESRGAN's second-order family, resizing by s itself
}
CODECS: dict[type, str] = {Jpeg: "JPEG", Webp: "WEBP"}  # PIL format of each compression step


@dataclass(frozen=True)
class Preset:
    """A named degradation: steps in order, the default scale, and whether output stays float."""

    name: str
    steps: tuple[Step, ...]
    scale: int = 4
    float_output: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        for step in self.steps:
            if not isinstance(step, Blur | Resize | Noise | Jpeg | Realistic):
                raise UserError(f"preset {self.name}: unknown step {step!r}")
        _check_scale(self.scale, f"preset {self.name}: scale")
        resizes = sum(isinstance(s, Resize | Realistic) for s in self.steps)
        if resizes > 1:
            raise UserError(f"preset {self.name}: at most one resize step")
        if resizes == 0 and self.scale != 1:
            raise UserError(f"preset {self.name}: scale {self.scale} needs a resize step")

    @property
    def resizes(self) -> bool:
        return any(isinstance(s, Resize | Realistic) for s in self.steps)

    @property
    def family(self) -> Realistic | None:
        """The per-patch family this preset is (its one step is `Realistic`), else None:
        training degrades every patch afresh with it instead of fixing one input per image."""
        only = self.steps[0] if len(self.steps) == 1 else None
        return only if isinstance(only, Realistic) else None


# --------------------------------------------------------------------------------------------
# Kernels


MIN_SIGMA = 1e-3  # pixels: a Gaussian this narrow is already a delta on the pixel grid


def _odd_size(extent: float) -> int:
    return 2 * math.ceil(extent - 1e-9) + 1


def gaussian_kernel(
    size: int, sigma1: float, sigma2: float, angle: float = 0.0, shift: float = 0.0
) -> np.ndarray:
    """size×size Gaussian with principal stds σ1 (along `angle`) and σ2, centred at +shift.

    Point-sampled at integer offsets (the usual SRMD/KernelGAN construction) and normalised
    to sum 1. `angle` is in radians from the +x (column) axis towards +y (rows). Exponents are
    taken relative to the largest tap, so a σ far below a pixel gives the limit (a delta, or
    equal weights on the taps nearest an off-grid centre), never 0/0; σ under MIN_SIGMA, whose
    kernel is that limit already, is taken as MIN_SIGMA (smaller ones overflow the exponent).
    """
    sigma1, sigma2 = max(sigma1, MIN_SIGMA), max(sigma2, MIN_SIGMA)
    c = size // 2
    yy, xx = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64) - shift
    cos, sin = math.cos(angle), math.sin(angle)
    u = cos * xx + sin * yy  # coordinate along the σ1 axis
    v = -sin * xx + cos * yy
    exponent = -0.5 * ((u / sigma1) ** 2 + (v / sigma2) ** 2)
    k = np.exp(exponent - exponent.max())
    return k / k.sum()


def box_kernel(size: int, shift: float = 0.0) -> np.ndarray:
    """size×size uniform kernel (the box [-size/2, size/2]², shifted), area-sampled, sum 1."""
    if shift == 0.0:
        return np.full((size, size), 1.0 / (size * size))
    c = size // 2 + 1  # one extra tap each side for the shifted edge
    m = np.arange(-c, c + 1, dtype=np.float64) - shift
    w = np.clip(np.minimum(m + 0.5, size / 2) - np.maximum(m - 0.5, -size / 2), 0.0, None)
    k = np.outer(w, w)
    return k / k.sum()


def disk_kernel(radius: float, shift: float = 0.0, *, supersample: int = 16) -> np.ndarray:
    """Uniform disk (defocus blur), each tap = the covered area of its pixel, sum 1."""
    c = math.ceil(radius + abs(shift) + 0.5)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(-c, c + 1, dtype=np.float64)
    sub = (grid[:, None] + offs[None, :]).ravel() - shift  # supersampled coordinates
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= radius * radius
    n = 2 * c + 1
    k = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    return k / k.sum()


def motion_kernel(
    length: float, angle: float, shift: float = 0.0, *, supersample: int = 16
) -> np.ndarray:
    """Linear motion blur: a uniform line segment of `length` px through the centre (+shift)
    at `angle` (radians from +x towards +y), bilinearly splatted from `supersample` points
    per pixel of length, sum 1."""
    c = math.ceil(length / 2 + abs(shift) + 1)
    n = max(2, math.ceil(length * supersample))
    t = (np.arange(n) + 0.5) / n - 0.5  # midpoints along the segment, in units of length
    xs = c + shift + t * length * math.cos(angle)
    ys = c + shift + t * length * math.sin(angle)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    k = np.zeros((2 * c + 1, 2 * c + 1))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(k, (y0 + dy, x0 + dx), wy * wx)
    return k / k.sum()


def _scaled(r: Range | None, factor: float) -> Range | None:
    return None if r is None else (r[0] * factor, r[1] * factor)


def _kernel_side(blur: Blur, sigma: Range | None, radius: Range | None, factor: float) -> int:
    """Side in pixels of the kernel `sample_kernel` builds (before any shift)."""
    if blur.kernel == "uniform":
        return blur.size
    if blur.kernel == "disk":
        assert radius is not None
        return 2 * math.ceil(radius[1] + 0.5) + 1
    if blur.kernel == "motion":
        assert blur.length is not None
        return 2 * math.ceil(blur.length[1] * factor / 2 + 1) + 1
    if blur.size and blur.reference_scale:
        return _odd_size((blur.size // 2) * factor)
    # at least 3×3, so that even a vanishing σ can be sampled off-centre before a decimation
    return blur.size if blur.size else max(3, _odd_size(3 * (sigma or (0.0, 0.0))[1]))


def sample_kernel(
    blur: Blur, rng: np.random.Generator, *, scale: int = 1, shift: float = 0.0
) -> np.ndarray:
    """Draw one kernel for `blur` at the run's scale (ranges rescaled by reference_scale)."""
    factor = scale / blur.reference_scale if blur.reference_scale else 1.0
    sigma, radius = _scaled(blur.sigma, factor), _scaled(blur.radius, factor)
    size = _kernel_side(blur, sigma, radius, factor)
    if size > MAX_KERNEL:
        raise UserError(
            f"blur step: at scale {scale} the kernel would be {size}×{size} pixels "
            f"(at most {MAX_KERNEL}); lower sigma, radius, length or size"
        )
    if blur.kernel == "uniform":
        return box_kernel(blur.size, shift)
    if blur.kernel == "motion":
        length = _scaled(blur.length, factor)
        assert length is not None
        return motion_kernel(_draw(rng, length), _draw(rng, blur.angle), shift)
    if blur.kernel == "disk":
        assert radius is not None
        return disk_kernel(_draw(rng, radius), shift)
    if sigma is None:  # "gaussian" given by its size only
        sigma = (blur.size / 6, blur.size / 6)
    if blur.kernel == "gaussian":
        s = _draw(rng, sigma)
        return gaussian_kernel(size, s, s, 0.0, shift)
    s1, s2 = _draw(rng, sigma), _draw(rng, sigma)
    theta = _draw(rng, blur.angle)
    return gaussian_kernel(size, s1, s2, theta, shift)


def convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve H×W×C with a 2-D kernel, symmetric boundaries, same size, float64."""
    c0, c1 = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(
        img.astype(np.float64, copy=False), ((c0, c0), (c1, c1), (0, 0)), mode="symmetric"
    )
    out = fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1))
    return out


# --------------------------------------------------------------------------------------------
# Applying a preset


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop bottom/right so that height and width are multiples of `scale` (BasicSR)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _as_float(img: np.ndarray, what: str) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"{what}: expected an H×W×3 RGB image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    return img.astype(np.float64)


def _add_noise(x: np.ndarray, noise: Noise, rng: np.random.Generator) -> np.ndarray:
    if noise.kind == "gaussian":
        sigma = _draw(rng, noise.sigma)
        x = x + sigma * rng.standard_normal(x.shape)
    elif noise.kind == "bsnr":
        sigma = math.sqrt(float(np.var(x)) / 10.0 ** (noise.bsnr / 10.0))
        x = x + sigma * rng.standard_normal(x.shape)
    else:
        gain, sigma = _draw(rng, noise.gain), _draw(rng, noise.sigma)
        if gain >= MIN_POISSON_GAIN:  # a draw below it (low 0): variance under 1e-12, none
            x = gain * rng.poisson(np.clip(x, 0.0, None) / gain)
        x = x + sigma * rng.standard_normal(x.shape)
    return np.clip(x, 0.0, 1.0)


def _jpeg(x: np.ndarray, jpeg: Jpeg, rng: np.random.Generator) -> np.ndarray:
    quality = int(rng.integers(jpeg.quality[0], jpeg.quality[1] + 1))
    buf = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buf, format=CODECS[type(jpeg)], quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def degrade(
    hr: np.ndarray, preset: Preset | str, *, scale: int | None = None, seed: int
) -> np.ndarray:
    """Apply a preset to an H×W×3 image (float [0, 1] or uint8); float32 out.

    The output is (H//s)×(W//s) for presets that resize (the image is mod-cropped first) and
    H×W otherwise. Deterministic per seed. On the uint8 grid unless `preset.float_output`.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    s = p.scale if scale is None else scale
    if not p.resizes and s != 1:
        raise UserError(f"preset {p.name} keeps the image size; scale must be 1, got {s}")
    _check_scale(s, "scale")
    rng = np.random.default_rng(seed)
    x = _as_float(mod_crop(hr, s), f"degrade with preset {p.name}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(
            f"a {hr.shape[0]}×{hr.shape[1]} image is too small for ×{s} (preset {p.name})"
        )
    phase = (s - 1) // 2
    for i, step in enumerate(p.steps):
        if isinstance(step, Blur):
            nxt = p.steps[i + 1] if i + 1 < len(p.steps) else None
            decimates = isinstance(nxt, Resize) and nxt.method == "decimate"
            # centre the kernel at -d to sample the blurred image at s·i + phase + d
            shift = -((s - 1) / 2 - phase) if decimates else 0.0
            x = convolve(x, sample_kernel(step, rng, scale=s, shift=shift))
        elif isinstance(step, Resize):
            if s > 1:
                x = imresize(x, 1.0 / s) if step.method == "bicubic" else x[phase::s, phase::s]
        elif isinstance(step, Noise):
            x = _add_noise(x, step, rng)
        elif isinstance(step, Realistic):
            x = degrade_array(x, step, scale=s, seed=int(rng.integers(2**63)))
        else:
            x = _jpeg(x, step, rng)
    x = np.clip(x, 0.0, 1.0)
    if not p.float_output:
        x = quantize(x)
    return np.ascontiguousarray(x, dtype=np.float32)


@dataclass(frozen=True)
class Domain:
    """An intermediate domain: stage 1's target, made from HR by a preset at a factor."""

    name: str
    factor: int  # HR side / domain side
    bit_depth: int  # 8: on the uint8 grid; 16: float noise, finer than one 8-bit step
    preset: str  # the preset that makes a target from HR (at `factor`)


# The ONE table of intermediate domains.
DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("bicubic-x4", 4, 8, "bicubic"),
        Domain("bicubic-x2", 2, 8, "bicubic"),
        Domain("blur9", 1, 16, "blur9"),
    )
}


def get_domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise UserError(f"unknown intermediate domain {name!r}; choose one of {', '.join(DOMAINS)}")
    return DOMAINS[name]


def intermediate(domain: str, hr: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Stage 1's target for an HR image: MATLAB-bicubic ↓4 or ↓2 (uint8 grid), or blur9."""
    d = get_domain(domain)
    return degrade(hr, PRESETS[d.preset], scale=d.factor, seed=seed)


def derive_seed(seed: int, name: str) -> int:
    """A per-image seed from a run seed and an image name (stable across runs and file sets).

    The first 8 bytes of SHA-256 of "<seed>:<name>", so that adding or removing files never
    changes the degradation of the others. A name's undecodable bytes (a file name that is not
    UTF-8) are hashed as they are on disk.
    """
    text = f"{seed}:{name}".encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


# --------------------------------------------------------------------------------------------
# The built-in presets

PRESETS: dict[str, Preset] = {
    "bicubic": Preset(
        name="bicubic",
        steps=(Resize("bicubic"),),
        scale=4,
        description="MATLAB bicubic ↓s (DIV2K's bicubic track)",
    ),
    # σ range and 21×21 size as DASR's blind ×4 setting (Wang et al., CVPR 2021)
    "gaussian-aniso": Preset(
        name="gaussian-aniso",
        steps=(
            Blur(
                kernel="gaussian-aniso",
                size=21,
                sigma=(0.2, 4.0),
                angle=(0.0, math.pi),
                reference_scale=4,
            ),
            Resize("decimate"),
        ),
        scale=4,
        description="one random anisotropic Gaussian per image, then s-fold decimation "
        "(a stand-in for DIV2K's unknown track)",
    ),
    "camera": Preset(
        name="camera",
        steps=(
            Blur(kernel="disk", radius=(1.0, 3.0), reference_scale=4),
            Resize("bicubic"),
            Noise(kind="poisson-gaussian", gain=(1e-4, 2e-3), sigma=(0.5 / 255, 3.0 / 255)),
            Jpeg(quality=(60, 95)),
        ),
        scale=4,
        description="defocus disk blur, bicubic ↓s, Poisson-Gaussian noise, JPEG "
        "(a RealSR-like family, for generalisation tests)",
    ),
}
PRESETS["realistic"] = Preset(
    name="realistic",
    steps=(Realistic(),),
    scale=4,
    description="Real-ESRGAN's second-order family, drawn afresh per image "
    "(per patch in training): the wide training family",
)
PRESETS["realistic-mix"] = Preset(
    name="realistic-mix",
    steps=(Realistic(clean_prob=0.15, plain_prob=0.25),),
    scale=4,
    description="`realistic` for a PSNR-trained stage 1 (the demo's and the shipped model's "
    "family): 15 % of patches clean (only resized), 25 % blurred and resized without noise "
    "or JPEG, 60 % Real-ESRGAN's",
)
# The held-out generalization suite (with `bicubic` and `camera` above). Lengths are for ×4
# and scale with s (reference_scale 4); blurs before a decimation are sampled on the
# bicubic grid, like `gaussian-aniso`.
_ANISO = PRESETS["gaussian-aniso"].steps[0]
for _name, _steps, _what in (
    ("gauss2", (Blur(kernel="gaussian", sigma=2.0, reference_scale=4),), "Gaussian σ 2"),
    ("defocus", (Blur(kernel="disk", radius=2.0, reference_scale=4),), "defocus disk r 2"),
    (
        "motion",
        (Blur(kernel="motion", length=9.0, angle=(0.0, math.pi), reference_scale=4),),
        "linear motion blur, 9 px at a random angle",
    ),
):
    PRESETS[_name] = Preset(
        name=_name, steps=(*_steps, Resize("decimate")), scale=4, description=f"{_what}, ↓s"
    )
for _name, _step, _what in (
    ("noise20", Noise(kind="gaussian", sigma=20 / 255), "white Gaussian noise σ 20/255"),
    ("jpeg40", Jpeg(quality=40), "JPEG quality 40"),
    ("webp40", Webp(quality=40), "WebP quality 40"),
):
    PRESETS[_name] = Preset(
        name=_name, steps=(Resize("bicubic"), _step), scale=4, description=f"bicubic ↓s, {_what}"
    )
PRESETS["aniso-noise-jpeg"] = Preset(
    name="aniso-noise-jpeg",
    steps=(_ANISO, Resize("decimate"), Noise(kind="gaussian", sigma=10 / 255), Jpeg(quality=50)),
    scale=4,
    description="gaussian-aniso's blur and decimation, then noise σ 10/255 and JPEG 50",
)

# The generalization suite: each preset and what makes it unseen relative to `realistic`.
SUITE: dict[str, str] = {
    "bicubic": "clean: realistic always adds noise and JPEG; realistic-mix's clean share uses "
    "torch's resizes, never MATLAB's antialiased bicubic",
    "gauss2": "σ 2 is inside realistic's blur range, and realistic-mix's plain share blurs "
    "alone, but decimated: the family always resizes by interpolation",
    "defocus": "a hard-edged uniform disk: realistic's nearest kernels, plateaus with β ≤ 2, "
    "have soft shoulders",
    "motion": "a kernel shape never trained on: a uniform line, where realistic's thinnest "
    "kernels are Gaussian-profiled ellipses",
    "noise20": "white noise last, at the LR resolution, uncompressed: realistic's noise is "
    "always followed by JPEG or a resize",
    "camera": "Poisson and Gaussian read noise together (realistic draws one or the other) "
    "under a hard disk blur",
    "jpeg40": "JPEG of a clean image: realistic compresses only images it has made noisy",
    "webp40": "a codec never trained on: WebP's block prediction and deblocking are not "
    "JPEG's 8×8 DCT",
    "aniso-noise-jpeg": "the paper's training blur (σ up to 4, decimated: outside realistic's "
    "σ ≤ 3 and interpolating resizes) under noise and JPEG",
}

for _k in (7, 9, 11):
    PRESETS[f"blur{_k}"] = Preset(
        name=f"blur{_k}",
        steps=(Blur(kernel="uniform", size=_k), Noise(kind="bsnr", bsnr=40.0)),
        scale=1,
        float_output=True,
        description=f"{_k}×{_k} uniform blur + white Gaussian noise at BSNR 40 dB (float)",
    )


# --------------------------------------------------------------------------------------------
# YAML


def _step_to_dict(step: Step) -> dict[str, Any]:
    key = next(k for k, t in STEP_TYPES.items() if type(step) is t)
    fields = {}
    for f in dataclasses.fields(step):
        v = getattr(step, f.name)
        fields[f.name] = list(v) if isinstance(v, tuple) else v
    return {key: fields}


def preset_to_dict(preset: Preset) -> dict[str, Any]:
    """Plain data (for YAML): name, description, scale, float_output, steps."""
    return {
        "name": preset.name,
        "description": preset.description,
        "scale": preset.scale,
        "float_output": preset.float_output,
        "steps": [_step_to_dict(s) for s in preset.steps],
    }


def preset_from_dict(data: Any, *, source: str = "preset") -> Preset:
    """Build a Preset from plain data; unknown or wrong keys raise UserError naming them."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with name, scale, steps")
    top = {"name", "description", "scale", "float_output", "steps"}
    for key in data:
        if key not in top:
            raise UserError(
                f"{source}: unknown key {key!r}; expected one of {', '.join(sorted(top))}"
            )
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise UserError(f"{source}: 'steps' must be a non-empty list")
    steps: list[Step] = []
    for i, raw in enumerate(raw_steps, 1):
        if not isinstance(raw, dict) or len(raw) != 1:
            raise UserError(
                f"{source}: step {i} must be one of {', '.join(STEP_TYPES)} "
                f"with its fields, e.g. 'blur: {{kernel: uniform, size: 9}}'"
            )
        ((kind, fields),) = raw.items()
        if kind not in STEP_TYPES:
            raise UserError(
                f"{source}: step {i}: unknown step {kind!r}; expected one of "
                f"{', '.join(STEP_TYPES)}"
            )
        fields = fields or {}
        if not isinstance(fields, dict):
            raise UserError(f"{source}: step {i} ({kind}): fields must be a mapping")
        names = {f.name for f in dataclasses.fields(STEP_TYPES[kind])}
        for key in fields:
            if key not in names:
                raise UserError(
                    f"{source}: step {i} ({kind}): unknown key {key!r}; expected "
                    f"one of {', '.join(sorted(names))}"
                )
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        try:
            steps.append(STEP_TYPES[kind](**args))
        except UserError as exc:
            raise UserError(f"{source}: step {i}: {exc}") from None
    name = data.get("name", Path(source).stem)
    scale = data.get("scale", 4 if any(isinstance(s, Resize | Realistic) for s in steps) else 1)
    float_output = data.get("float_output", False)
    if not isinstance(float_output, bool):
        raise UserError(f"{source}: float_output must be true or false")
    return Preset(
        name=str(name),
        steps=tuple(steps),
        scale=scale,
        float_output=float_output,
        description=str(data.get("description", "")),
    )


def load_preset(path: str | Path) -> Preset:
    """Read a preset YAML file (see `preset_to_dict` for the layout)."""
    return preset_from_dict(read_yaml(path, "preset"), source=str(path))


def save_preset(preset: Preset, path: str | Path) -> None:
    """Write a preset as YAML (atomic)."""
    write_text_atomic(
        path, yaml.safe_dump(preset_to_dict(preset), sort_keys=False, allow_unicode=True)
    )


def get_preset(name_or_yaml_path: str) -> Preset:
    """A built-in preset by name, or a preset YAML file."""
    if name_or_yaml_path in PRESETS:
        return PRESETS[name_or_yaml_path]
    if name_or_yaml_path.endswith((".yaml", ".yml")) or Path(name_or_yaml_path).is_file():
        return load_preset(name_or_yaml_path)
    raise UserError(
        f"unknown preset {name_or_yaml_path!r}; choose one of {', '.join(PRESETS)} or a .yaml file"
    )


def _fmt_range(r: Sequence[float] | None, unit: str = "") -> str:
    if r is None:
        return "—"
    lo, hi = r
    return f"{lo:g}{unit}" if lo == hi else f"[{lo:g}, {hi:g}]{unit}"


def _describe_step(step: Step) -> str:
    if isinstance(step, Blur):
        ref = (
            f" (for ×{step.reference_scale}; × s/{step.reference_scale})"
            if step.reference_scale
            else ""
        )
        if step.kernel == "uniform":
            return f"uniform {step.size}×{step.size} blur"
        if step.kernel == "disk":
            return f"disk blur, radius {_fmt_range(step.radius)} px{ref}"
        if step.kernel == "motion":
            angle = f"[{step.angle[0] / math.pi:g}π, {step.angle[1] / math.pi:g}π)"
            return f"motion blur, length {_fmt_range(step.length)} px, angle ∈ {angle}{ref}"
        size = f"{step.size}×{step.size}" if step.size else "2⌈3σ⌉+1"
        if step.kernel == "gaussian":
            return f"Gaussian blur {size}, σ {_fmt_range(step.sigma)}{ref}"
        angle = f"[{step.angle[0] / math.pi:g}π, {step.angle[1] / math.pi:g}π)"
        return (
            f"anisotropic Gaussian {size}, σ1, σ2 ∈ {_fmt_range(step.sigma)} px, "
            f"angle ∈ {angle}{ref}"
        )
    if isinstance(step, Resize):
        return "MATLAB bicubic ↓s" if step.method == "bicubic" else "decimation ↓s (phase (s−1)//2)"
    if isinstance(step, Noise):
        if step.kind == "bsnr":
            return f"AWGN at BSNR {step.bsnr:g} dB"
        if step.kind == "gaussian":
            return f"AWGN σ {_fmt_range(tuple(v * 255 for v in step.sigma))}/255"
        return (
            f"Poisson-Gaussian, gain a ∈ {_fmt_range(step.gain)}, "
            f"read σ ∈ {_fmt_range(tuple(v * 255 for v in step.sigma))}/255"
        )
    if isinstance(step, Realistic):
        mix = ""
        if step.clean_prob or step.plain_prob:
            mix = f"; {step.clean_prob:.0%} clean, {step.plain_prob:.0%} without noise and JPEG"
        return (
            "Real-ESRGAN second-order: blur (6 kernels or sinc, "
            f"{step.kernel_size[0]}–{step.kernel_size[1]} px), resize, Gaussian/Poisson noise, "
            f"JPEG {_fmt_range(step.jpeg_range)}, twice; final resize + sinc and JPEG{mix} "
            "(README: every range)"
        )
    return f"{'WebP' if isinstance(step, Webp) else 'JPEG'} quality {_fmt_range(step.quality)}"


def presets_table() -> str:
    """A Markdown table of the built-in presets with their exact parameters."""
    rows = ["| preset | default s | output | steps |", "|---|---|---|---|"]
    for p in PRESETS.values():
        out = "float (16-bit PNG)" if p.float_output else "uint8 grid"
        rows.append(
            f"| `{p.name}` | {p.scale} | {out} | {'; '.join(_describe_step(s) for s in p.steps)} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Files (the CLI's `twostage degrade`)


def _plan(files: list[Path], out: Path, p: Preset, s: int) -> list[tuple[Path, Path]]:
    """(input, output) pairs: `<stem>x<S>.png` for SR presets, `<stem>.png` for float ones."""
    names: dict[str, Path] = {}
    for f in files:
        if f.stem in names:
            raise UserError(f"two inputs would write the same output: {names[f.stem]} and {f}")
        names[f.stem] = f
    tail = "" if p.float_output else f"x{s}"
    plan = [(f, out / f"{stem}{tail}.png") for stem, f in names.items()]
    check_outputs(plan, out=out)
    return plan


def degrade_files(
    inputs: Sequence[Path],
    *,
    preset: str | Preset,
    scale: int | None,
    seed: int,
    out: Path,
    overwrite: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> tuple[list[Path], int]:
    """Degrade image files into `out`; returns the written paths and the number that failed.

    SR presets write `<stem>x<S>.png` (8-bit, DIV2K's naming); float presets (blur7/9/11) write
    `<stem>.png` as 16-bit PNG, because their noise is finer than one 8-bit step. Each image
    uses `derive_seed(seed, stem)`, so its output does not depend on which other files are
    given. Alpha is dropped; 16-bit inputs are used at full precision. An existing output is
    kept unless `overwrite`; an input is never written over. A file that fails is one line on
    stderr naming it, and the others are still degraded.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    s = p.scale if scale is None else _check_scale(scale, "--scale")
    if not p.resizes and s != 1:
        raise UserError(f"preset {p.name} keeps the image size; --scale must be 1, got {s}")
    out = Path(out)
    plan = _plan(expand_inputs(list(inputs)), out, p, s)
    remove_stale_temps(out)
    written, failed = [], 0
    for f, target in plan:
        if target.exists() and not overwrite:
            print(f"skip {f}: {target} exists (--overwrite to replace it)", file=sys.stderr)
            continue
        try:
            img, _ = read_image(f, max_pixels=max_pixels)
            lr = degrade(img, p, scale=s, seed=derive_seed(seed, f.stem))
            write_image(target, lr, bit_depth=16 if p.float_output else 8)
            written.append(target)
        except (UserError, OSError) as exc:
            message = str(exc) if str(f) in str(exc) else f"{f}: {exc}"
            print(f"error: {message}", file=sys.stderr)
            failed += 1
    return written, failed
