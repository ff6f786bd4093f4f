"""Applying degradation presets: kernels, the steps in order, intermediate domains, files.

A `Preset` is data, not code: a list of frozen step dataclasses applied in order to a float
RGB image, with every random parameter drawn from `np.random.default_rng(seed)` in step order,
so that a (preset, scale, seed) triple always gives the same image. Users write their own
presets in YAML with the same fields (see `load_preset` and docs/degradations.md, "Degradations and
data").

Conventions (docs/degradations.md's preset table lists every number):

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

import hashlib
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.signal import fftconvolve

from twostage.errors import UserError
from twostage.limits import (
    MAX_KERNEL,
    MAX_PIXELS,
    MIN_POISSON_GAIN,
)
from twostage.ops.files import check_outputs, remove_stale_temps
from twostage.ops.imageio import quantize, read_image, to_uint8, write_image
from twostage.ops.inputs import expand_inputs
from twostage.ops.presets import (
    PRESETS,
    SUITE,
    get_preset,
    load_preset,
    preset_from_dict,
    preset_to_dict,
    presets_table,
    save_preset,
)
from twostage.ops.realistic import Realistic, degrade_array
from twostage.ops.resize import imresize
from twostage.ops.steps import (
    CODECS,
    Blur,
    Jpeg,
    Noise,
    Preset,
    Range,
    Resize,
    Webp,
    check_scale,
)

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


def _draw(rng: np.random.Generator, r: Range) -> float:
    """One uniform draw from a range; a fixed value draws nothing (keeps streams stable)."""
    return r[0] if r[0] == r[1] else float(rng.uniform(r[0], r[1]))


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
    """Uniform disk (defocus blur), each tap = the covered area of its pixel, sum 1.

    The area is counted on `supersample`² points a pixel. A disk that holds none of them (a
    radius far below a pixel) is taken at its limit, as `gaussian_kernel` takes a tiny σ: the
    points nearest the centre, so a delta (or equal weights on the taps nearest an off-grid
    centre), never 0/0.
    """
    c = math.ceil(radius + abs(shift) + 0.5)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(-c, c + 1, dtype=np.float64)
    sub = (grid[:, None] + offs[None, :]).ravel() - shift  # supersampled coordinates
    distance2 = sub[:, None] ** 2 + sub[None, :] ** 2
    inside = distance2 <= max(radius * radius, distance2.min())
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
    check_scale(s, "scale")
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
    s = p.scale if scale is None else check_scale(scale, "--scale")
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
