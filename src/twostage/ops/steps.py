"""Degradation steps: the vocabulary of a preset (blur, resize, noise, JPEG/WebP, realistic).

Each step is a frozen dataclass that checks its own fields (`__post_init__`: kinds, ranges and
the sizes of limits.py) and names the field in its error. A `Preset` is a named list of steps;
the built-in table and the YAML files are presets.py's, and degrade.py applies them. Ranges
are `(low, high)` pairs drawn per image; a single number stands for the fixed range (v, v).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from twostage.errors import UserError, short
from twostage.limits import MAX_ABS_BSNR, MAX_KERNEL, MAX_SCALE, MIN_POISSON_GAIN
from twostage.ops.realistic import Realistic

__all__ = [
    "BLUR_KERNELS",
    "CODECS",
    "NOISE_KINDS",
    "RESIZE_METHODS",
    "STEP_TYPES",
    "Blur",
    "Jpeg",
    "Noise",
    "Preset",
    "Range",
    "Realistic",
    "Resize",
    "Step",
    "Webp",
    "check_scale",
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


def check_scale(value: Any, what: str) -> int:
    """A degradation's scale: an integer from 1 to MAX_SCALE, or a UserError naming `what`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SCALE:
        raise UserError(f"{what} must be an integer from 1 to {MAX_SCALE}, got {short(value)}")
    return value


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
    sigma: Range | float | None = None  # a number: the fixed range (v, v), as for every range
    angle: Range | float = (0.0, math.pi)
    radius: Range | float | None = None
    reference_scale: int | None = None
    length: Range | float | None = None

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
    sigma: Range | float = (0.0, 0.0)
    bsnr: float = 40.0
    gain: Range | float = (0.0, 0.0)

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

    quality: tuple[int, int] | tuple[float, float] | int = (60, 95)  # 70.0 is 70

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
        check_scale(self.scale, f"preset {self.name}: scale")
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
