"""`realistic`: Real-ESRGAN's second-order degradation family, drawn afresh for every patch.

`Realistic` is the family's table of ranges: the numbers of Real-ESRGAN's
`train_realesrgan_x4plus.yml` (Wang et al., ICCVW 2021), under its option names (a `2` suffix
for the second round). `degrade_batch` applies it to a batch of HR patches:

    round 1: blur (one of six kernels, or sinc) → resize up/down/keep (area, bilinear or
             bicubic) → Gaussian or Poisson noise (colour or gray) → JPEG
    round 2: the same with its own ranges (the blur only with probability `blur_prob2`), the
             resize relative to the target size
    final:   [resize to H/s × W/s + sinc] then JPEG, or JPEG then [resize + sinc], 50/50;
             the sinc with probability `final_sinc_prob`; rounded to the uint8 grid.

Every random choice of sample i comes from `np.random.default_rng([seed, iteration, index])`
(index = `first_index + i`), so a sample's output depends only on its own patch and those three
numbers: not on the batch it is in, its size, or the thread count. Each sample runs on its own,
single-threaded, as float32 numpy: its sizes change from step to step, and on a 2-core CPU a
per-sample FFT convolution costs less than Real-ESRGAN's grouped convolution over the batch
with kernels padded to 21×21 (measured: BENCHMARKS.md). Convolutions are correlations with
reflected borders; every kernel is symmetric under a half-turn, so correlation and
convolution agree. Resizes reproduce torch's `interpolate` (what Real-ESRGAN calls); JPEG is
PIL's (4:2:0).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy import fft as sp_fft
from scipy.special import j1

from twostage.errors import UserError, short
from twostage.limits import MAX_KERNEL, MAX_NOISE_SIGMA, MAX_POISSON_SCALE, MAX_RESIZE
from twostage.ops.imageio import grid_levels, quantize

__all__ = [
    "KERNEL_KINDS",
    "REALISTIC",
    "RESIZE_MODES",
    "Realistic",
    "degrade_array",
    "degrade_batch",
    "draw_kernel",
    "shaped_kernel",
    "sinc_kernel",
]

Range = tuple[float, float]

# Real-ESRGAN's kernel_list, in the order of `kernel_prob`: name → (profile, isotropic)
KERNEL_KINDS: dict[str, tuple[str, bool]] = {
    "iso": ("gaussian", True),
    "aniso": ("gaussian", False),
    "generalized_iso": ("generalized", True),
    "generalized_aniso": ("generalized", False),
    "plateau_iso": ("plateau", True),
    "plateau_aniso": ("plateau", False),
}
RESIZE_MODES = ("area", "bilinear", "bicubic")
# the largest noise level of each noise range (Gaussian sigmas on the 0-255 scale)
NOISE_CAPS = {
    "noise_range": MAX_NOISE_SIGMA,
    "noise_range2": MAX_NOISE_SIGMA,
    "poisson_scale_range": MAX_POISSON_SCALE,
    "poisson_scale_range2": MAX_POISSON_SCALE,
}
GRAY_WEIGHTS = np.array(
    [0.2989, 0.587, 0.114], dtype=np.float32
)  # Real-ESRGAN's rgb_to_grayscale for gray Poisson noise


@dataclass(frozen=True)
class Realistic:
    """The ranges of the `realistic` family (a preset step); defaults = Real-ESRGAN ×4plus.

    Ranges are (low, high) drawn uniformly; noise σ in grey levels (of 255); resize factors
    relative to the HR size (round 1) or to the target size (round 2); `resize_prob` is
    (up, down, keep); `kernel_prob` follows KERNEL_KINDS; kernel sizes are the odd sizes in
    `kernel_size`, uniformly; a sinc kernel's cutoff comes from `sinc_cutoff`, or from
    `sinc_cutoff_large` for kernels of `sinc_large_from` px and more (rounds 1 and 2).
    """

    kernel_size: tuple[int, int] = (7, 21)
    rotation: Range = (-math.pi, math.pi)
    sinc_cutoff: Range = (math.pi / 3, math.pi)
    sinc_cutoff_large: Range = (math.pi / 5, math.pi)
    sinc_large_from: int = 13
    # round 1
    blur_prob: float = 1.0
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: Range = (0.2, 3.0)
    betag_range: Range = (0.5, 4.0)
    betap_range: Range = (1.0, 2.0)
    resize_prob: tuple[float, ...] = (0.2, 0.7, 0.1)
    resize_range: Range = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: Range = (1.0, 30.0)
    poisson_scale_range: Range = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)
    # round 2
    blur_prob2: float = 0.8
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: Range = (0.2, 1.5)
    betag_range2: Range = (0.5, 4.0)
    betap_range2: Range = (1.0, 2.0)
    resize_prob2: tuple[float, ...] = (0.3, 0.4, 0.3)
    resize_range2: Range = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: Range = (1.0, 25.0)
    poisson_scale_range2: Range = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[int, int] = (30, 95)
    # final
    final_sinc_prob: float = 0.8
    final_jpeg_first_prob: float = 0.5
    # the mixture (0 in Real-ESRGAN, which always blurs, adds noise and compresses): a share of
    # "clean" samples, only resized to the target size, and of "plain" ones, blurred and
    # resized as drawn but with neither noise nor JPEG. A stage 1 that never saw a clean or a
    # blur-only input learns to smooth every input as if it were noisy (BENCHMARKS.md).
    clean_prob: float = 0.0
    plain_prob: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name), f.default))
        lo, hi = self.kernel_size
        if lo % 2 == 0 or hi % 2 == 0 or hi > MAX_KERNEL:
            raise UserError(
                f"realistic step: kernel_size must be odd sizes of at most {MAX_KERNEL}, "
                f"got {lo, hi}"
            )
        for name in ("jpeg_range", "jpeg_range2"):
            if getattr(self, name)[1] > 100:
                raise UserError(f"realistic step: {name}: JPEG qualities are at most 100")
        for name in ("resize_range", "resize_range2"):
            low, high = getattr(self, name)
            if low <= 0 or high > MAX_RESIZE:
                raise UserError(
                    f"realistic step: {name}: resize factors must be > 0 and at most "
                    f"{MAX_RESIZE}, got {(low, high)}"
                )
        for name, cap in NOISE_CAPS.items():
            if (value := getattr(self, name))[1] > cap:
                raise UserError(f"realistic step: {name} must be at most {cap}, got {short(value)}")
        for name in ("blur_sigma", "blur_sigma2", "sinc_cutoff", "sinc_cutoff_large"):
            if getattr(self, name)[0] <= 0:
                raise UserError(f"realistic step: {name} must be > 0, got {getattr(self, name)}")
        if self.clean_prob + self.plain_prob > 1:
            raise UserError("realistic step: clean_prob + plain_prob must be at most 1")


def _checked(name: str, value: object, default: object) -> object:
    """One field against the kind of its default: probability, count, range or distribution."""
    owner = f"realistic step: {name}"
    if isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
        if not ok:
            raise UserError(f"{owner} must be a probability in [0, 1], got {value!r}")
        return float(value)
    integral = all(
        isinstance(d, int) for d in (default if isinstance(default, tuple) else [default])
    )
    try:
        vals = tuple(float(v) for v in (value if isinstance(value, tuple | list) else [value]))
    except (TypeError, ValueError):
        vals = ()
    want = len(default) if isinstance(default, tuple) else 1
    if len(vals) != want or not all(math.isfinite(v) for v in vals) or isinstance(value, bool):
        raise UserError(f"{owner} must be {want} number(s), got {value!r}")
    if integral and not all(v.is_integer() and v >= 1 for v in vals):
        raise UserError(f"{owner} must be positive integers, got {value!r}")
    if want == 2 and not (vals[0] <= vals[1] and (vals[0] >= 0 or name == "rotation")):
        raise UserError(f"{owner} must satisfy 0 <= low <= high, got {value!r}")
    if want > 2 and (min(vals) < 0 or abs(sum(vals) - 1) > 1e-6):
        raise UserError(f"{owner} must be probabilities that sum to 1, got {value!r}")
    out = tuple(int(v) for v in vals) if integral else vals
    return out if isinstance(default, tuple) else out[0]


@dataclass(frozen=True)
class _Round:
    """The ranges of one round (a view of `Realistic`, without the `2` suffix)."""

    blur_prob: float
    kernel_prob: tuple[float, ...]
    sinc_prob: float
    blur_sigma: Range
    betag_range: Range
    betap_range: Range
    resize_prob: tuple[float, ...]
    resize_range: Range
    gaussian_noise_prob: float
    noise_range: Range
    poisson_scale_range: Range
    gray_noise_prob: float
    jpeg_range: tuple[int, int]


@functools.lru_cache(maxsize=16)
def _rounds(family: Realistic) -> tuple[_Round, _Round]:
    names = [f.name for f in dataclasses.fields(_Round)]
    return (
        _Round(**{n: getattr(family, n) for n in names}),
        _Round(**{n: getattr(family, n + "2") for n in names}),
    )


# --------------------------------------------------------------------------------------------
# Kernels


@functools.lru_cache(maxsize=32)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets from the centre of a size×size kernel (read-only)."""
    c = size // 2
    yy, xx = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def shaped_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float,
    theta: float = 0.0,
    *,
    profile: str = "gaussian",
    beta: float = 1.0,
) -> np.ndarray:
    """size×size kernel of q = xᵀΣ⁻¹x (Σ: stds σx along `theta`, σy across), sum 1.

    profile "gaussian": exp(−q/2); "generalized": exp(−q^β/2); "plateau": 1/(1 + q^β).
    """
    yy, xx = _grid(size)
    cos, sin = math.cos(theta), math.sin(theta)
    q = ((cos * xx + sin * yy) / sigma_x) ** 2 + ((-sin * xx + cos * yy) / sigma_y) ** 2
    if profile == "gaussian":
        k = np.exp(-0.5 * q)
    elif profile == "generalized":
        k = np.exp(-0.5 * q**beta)
    else:
        k = 1.0 / (1.0 + q**beta)
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """size×size circular low-pass (2-D sinc, cutoff in radians per pixel), sum 1."""
    c = size // 2
    yy, xx = _grid(size)
    r = np.hypot(xx, yy)
    r[c, c] = 1.0  # placeholder: the centre's limit is set below
    k = cutoff * j1(cutoff * r) / (2 * math.pi * r)
    k[c, c] = cutoff**2 / (4 * math.pi)
    return k / k.sum()


def _beta(rng: np.random.Generator, r: Range) -> float:
    """Real-ESRGAN's shape draw: below 1 or above 1 with probability 1/2 each."""
    return float(rng.uniform(r[0], 1.0) if rng.random() < 0.5 else rng.uniform(1.0, r[1]))


def _pick(rng: np.random.Generator, probs: tuple[float, ...]) -> int:
    """An index drawn with the given probabilities (one uniform draw)."""
    return min(int(np.searchsorted(np.cumsum(probs), rng.random(), side="right")), len(probs) - 1)


def _odd_size(rng: np.random.Generator, family: Realistic) -> int:
    """One of the odd sizes in `kernel_size`, uniformly."""
    lo, hi = family.kernel_size
    return lo + 2 * int(rng.integers((hi - lo) // 2 + 1))


def draw_kernel(rng: np.random.Generator, family: Realistic, second: bool = False) -> np.ndarray:
    """One blur kernel of round 1 (or 2): a sinc or one of KERNEL_KINDS, unpadded."""
    r = _rounds(family)[int(second)]
    size = _odd_size(rng, family)
    if rng.random() < r.sinc_prob:
        cut = family.sinc_cutoff_large if size >= family.sinc_large_from else family.sinc_cutoff
        return sinc_kernel(size, float(rng.uniform(*cut)))
    kind = list(KERNEL_KINDS)[_pick(rng, r.kernel_prob)]
    profile, isotropic = KERNEL_KINDS[kind]
    sx = float(rng.uniform(*r.blur_sigma))
    sy, theta = sx, 0.0
    if not isotropic:
        sy, theta = float(rng.uniform(*r.blur_sigma)), float(rng.uniform(*family.rotation))
    beta = 1.0
    if profile != "gaussian":
        beta = _beta(rng, r.betag_range if profile == "generalized" else r.betap_range)
    return shaped_kernel(size, sx, sy, theta, profile=profile, beta=beta)


# --------------------------------------------------------------------------------------------
# Draws: everything random about one sample, from its own generator


@dataclass(frozen=True)
class _Draw:
    """One round's draws for one sample."""

    kernel: np.ndarray | None
    factor: float  # resize factor; 1 = keep
    mode: str
    gaussian: bool  # Gaussian noise, else Poisson
    level: float  # noise σ in [0, 1] units, or the Poisson scale
    gray: bool
    quality: int


@dataclass(frozen=True)
class _Plan:
    first: _Draw
    second: _Draw
    final_mode: str
    sinc: np.ndarray | None
    jpeg_first: bool
    mix: str = "full"  # "clean": only the final resize; "plain": no noise, no JPEG


def _draw_round(rng: np.random.Generator, family: Realistic, second: bool) -> _Draw:
    r = _rounds(family)[int(second)]
    kernel = draw_kernel(rng, family, second) if rng.random() < r.blur_prob else None
    updown = _pick(rng, r.resize_prob)  # up, down, keep
    factor = 1.0
    if updown == 0:
        factor = float(rng.uniform(1.0, r.resize_range[1]))
    elif updown == 1:
        factor = float(rng.uniform(r.resize_range[0], 1.0))
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    gaussian = bool(rng.random() < r.gaussian_noise_prob)
    noise = r.noise_range if gaussian else r.poisson_scale_range
    level = float(rng.uniform(*noise)) / (255.0 if gaussian else 1.0)
    gray = bool(rng.random() < r.gray_noise_prob)
    quality = int(rng.integers(r.jpeg_range[0], r.jpeg_range[1] + 1))
    return _Draw(kernel, factor, mode, gaussian, level, gray, quality)


def _draw_plan(rng: np.random.Generator, family: Realistic) -> _Plan:
    first, second = _draw_round(rng, family, False), _draw_round(rng, family, True)
    final_mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    sinc = None
    if rng.random() < family.final_sinc_prob:
        sinc = sinc_kernel(_odd_size(rng, family), float(rng.uniform(*family.sinc_cutoff)))
    jpeg_first = bool(rng.random() < family.final_jpeg_first_prob)
    mix = "full"
    if family.clean_prob or family.plain_prob:  # no draw for Real-ESRGAN's own family
        u = rng.random()
        if u < family.clean_prob:
            mix = "clean"
        elif u < family.clean_prob + family.plain_prob:
            mix = "plain"
    return _Plan(first, second, final_mode, sinc, jpeg_first, mix)


# --------------------------------------------------------------------------------------------
# Steps on one C×H×W float32 array


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate with a kernel, reflected borders (repeatedly where the image is smaller).

    By FFT at the padded size: the circular wrap-around only reaches the border that `valid`
    drops, so no larger transform is needed.
    """
    p = kernel.shape[0] // 2
    _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (p, p), (p, p)), mode="reflect")
    size = (sp_fft.next_fast_len(h + 2 * p, True), sp_fft.next_fast_len(w + 2 * p, True))
    spectrum = sp_fft.rfft2(padded, size) * sp_fft.rfft2(
        kernel[::-1, ::-1].astype(np.float32), size
    )
    return sp_fft.irfft2(spectrum, size)[:, 2 * p : 2 * p + h, 2 * p : 2 * p + w]


def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = −0.75 (torch's and OpenCV's bicubic)."""
    a, t = -0.75, np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


@functools.lru_cache(maxsize=4096)
def _resize_taps(n_in: int, n_out: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights (n_out×taps) of torch's `interpolate` along one axis
    (align_corners=False, no antialias): "area" = adaptive average pooling, "bilinear",
    "bicubic" (indices clamped at the borders)."""
    rows = np.arange(n_out)
    if mode == "area":
        lo, hi = (rows * n_in) // n_out, -((-(rows + 1) * n_in) // n_out)
        taps = lo[:, None] + np.arange(int((hi - lo).max()))
        weights = np.where(taps < hi[:, None], 1.0 / (hi - lo)[:, None], 0.0)
    else:
        src = (rows + 0.5) * (n_in / n_out) - 0.5
        if mode == "bilinear":
            src = np.maximum(src, 0.0)
            frac = src - np.floor(src)
            taps, weights = np.floor(src)[:, None] + np.arange(2), np.stack([1 - frac, frac], 1)
        else:
            taps = np.floor(src)[:, None] + np.arange(-1, 3)
            weights = _cubic(src[:, None] - taps)
    idx = np.clip(taps, 0, n_in - 1).astype(np.intp)
    return idx, weights.astype(np.float32)


def _resize(x: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Real-ESRGAN's resizer (torch's `interpolate`), separably, as weighted gathers."""
    if x.shape[1:] == size:
        return x
    idx, w = _resize_taps(x.shape[1], size[0], mode)
    x = np.einsum("chtw,ht->chw", x[:, idx, :], w)
    idx, w = _resize_taps(x.shape[2], size[1], mode)
    return np.einsum("chwt,wt->chw", x[:, :, idx], w)


def _times(size: tuple[float, float], factor: float) -> tuple[int, int]:
    return (max(1, int(size[0] * factor)), max(1, int(size[1] * factor)))


def _noise(x: np.ndarray, d: _Draw, rng: np.random.Generator) -> np.ndarray:
    """Gaussian (σ = level) or Poisson noise (Real-ESRGAN's: counts of 2^⌈log2 #levels⌉ per
    unit, on the image rounded to 8 bits, times `level`), one channel if gray; then clip."""
    c, h, w = x.shape
    if d.gaussian:
        noise = rng.standard_normal((1 if d.gray else c, h, w), dtype=np.float32) * d.level
    else:
        base = np.tensordot(GRAY_WEIGHTS, x, axes=1)[None] if d.gray else x
        levels = grid_levels(base, 255.0).astype(np.uint8)
        vals = 2.0 ** math.ceil(math.log2(np.count_nonzero(np.bincount(levels.ravel()))))
        q = levels / 255.0
        noise = ((rng.poisson(q * vals) / vals - q) * d.level).astype(np.float32)
    return np.clip(x + noise, 0.0, 1.0)


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """Through PIL JPEG (4:2:0) at `quality`: the decoded image, on the uint8 grid."""
    buf = io.BytesIO()
    levels = grid_levels(x, 255.0).astype(np.uint8)
    Image.fromarray(levels.transpose(1, 2, 0)).save(buf, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        arr = np.asarray(im)
    return arr.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)


def _one(x: np.ndarray, plan: _Plan, rng: np.random.Generator, *, scale: int) -> np.ndarray:
    """One 3×H×W HR patch through the family: 3×(H/s)×(W/s), on the uint8 grid."""
    a, b = plan.first, plan.second
    hr = x.shape[1:]
    lr = (hr[0] // scale, hr[1] // scale)
    if plan.mix == "clean":
        return quantize(_resize(x, lr, plan.final_mode))
    noisy = plan.mix == "full"
    if a.kernel is not None:
        x = _filter(x, a.kernel)
    x = _resize(x, _times(hr, a.factor), a.mode)
    if noisy:
        x = _jpeg(_noise(x, a, rng), a.quality)
    if b.kernel is not None:
        x = _filter(x, b.kernel)
    x = _resize(x, _times(lr, b.factor), b.mode)
    if noisy:
        x = _noise(x, b, rng)
    if noisy and plan.jpeg_first:
        x = _jpeg(x, b.quality)
    x = _resize(x, lr, plan.final_mode)
    if plan.sinc is not None:
        x = _filter(x, plan.sinc)
    if noisy and not plan.jpeg_first:
        x = _jpeg(x, b.quality)
    return quantize(x)


REALISTIC = Realistic()


@torch.no_grad()
def degrade_batch(
    hr: torch.Tensor,
    *,
    scale: int,
    seed: int,
    iteration: int = 0,
    first_index: int = 0,
    family: Realistic = REALISTIC,
) -> torch.Tensor:
    """N×3×H×W HR in [0, 1] (H, W multiples of `scale`) → N×3×(H/s)×(W/s) on the uint8 grid.

    Sample i draws from `np.random.default_rng([seed, iteration, first_index + i])`: training
    passes its seed, the iteration and the sample's index in the global batch.
    """
    if hr.ndim != 4 or hr.shape[1] != 3:
        raise UserError(f"realistic: expected an N×3×H×W batch, got shape {tuple(hr.shape)}")
    n, _, h, w = hr.shape
    if scale < 1 or h % scale or w % scale or h < scale or w < scale:
        raise UserError(f"realistic: a {h}×{w} patch is not a positive multiple of ×{scale}")
    if min(seed, iteration, first_index) < 0:
        raise UserError("realistic: seed, iteration and index must be >= 0")
    x = hr.detach().to(torch.float32).cpu().numpy()
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, iteration, first_index + i])
        out.append(_one(x[i], _draw_plan(rng, family), rng, scale=scale))
    return torch.from_numpy(np.stack(out))


def degrade_array(img: np.ndarray, family: Realistic, *, scale: int, seed: int) -> np.ndarray:
    """One H×W×3 image (H, W multiples of `scale`) → (H/s)×(W/s)×3 float64, uint8 grid."""
    x = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    rng = np.random.default_rng([seed, 0, 0])
    return _one(x, _draw_plan(rng, family), rng, scale=scale).transpose(1, 2, 0).astype(np.float64)
