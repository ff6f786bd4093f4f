"""The built-in degradation presets, the held-out suite, and preset YAML files.

`PRESETS` is the one table of named presets (docs/degradations.md's preset table is
`presets_table()`);
`SUITE` names the held-out generalization suite and what makes each entry unseen. A user's
preset is a YAML file of the same steps (`preset_to_dict` writes one, `preset_from_dict` reads
one through `parse`, errors naming the file, the step and the key). degrade.py applies them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from twostage.errors import UserError
from twostage.ops.files import read_yaml, write_text_atomic
from twostage.ops.steps import (
    STEP_TYPES,
    Blur,
    Jpeg,
    Noise,
    Preset,
    Realistic,
    Resize,
    Step,
    Webp,
)
from twostage.parse import parse

__all__ = [
    "PRESETS",
    "SUITE",
    "PresetFile",
    "get_preset",
    "load_preset",
    "preset_from_dict",
    "preset_to_dict",
    "presets_table",
    "save_preset",
]

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
PRESETS["realistic-clean"] = Preset(
    name="realistic-clean",
    steps=(Realistic(clean_prob=0.3, plain_prob=0.3),),
    scale=4,
    description="`realistic` with twice realistic-mix's clean share (the shipped blind-x4's "
    "family): 30 % of patches clean (only resized), 30 % blurred and resized without noise "
    "or JPEG, 40 % Real-ESRGAN's",
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


@dataclass(frozen=True)
class PresetFile:
    """A preset YAML as written (filled by `parse`); `preset_to_dict` writes the same keys."""

    steps: tuple[dict[str, Any], ...]  # each {KIND: {field: value, ...}}, KIND from STEP_TYPES
    name: str | None = None  # default: the file's stem
    description: str = ""
    scale: int | None = None  # default: 4 with a resize step, else 1
    float_output: bool = False


def _step(raw: Any, i: int, source: str) -> Step:
    """Step `i` (from 1) of a preset file: `{KIND: {field: value}}`, its fields parsed."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise UserError(
            f"{source}: step {i} must be one of {', '.join(STEP_TYPES)} "
            f"with its fields, e.g. 'blur: {{kernel: uniform, size: 9}}'"
        )
    ((kind, fields),) = raw.items()
    if kind not in STEP_TYPES:
        raise UserError(
            f"{source}: step {i}: unknown step {kind!r}; expected one of {', '.join(STEP_TYPES)}"
        )
    return parse(STEP_TYPES[kind], fields or {}, f"{source}: step {i}")


def preset_from_dict(data: Any, *, source: str = "preset") -> Preset:
    """Build a Preset from plain data; unknown or wrong keys raise UserError naming them."""
    spec: PresetFile = parse(PresetFile, data, source)
    if not spec.steps:
        raise UserError(f"{source}: 'steps' must be a non-empty list")
    steps = tuple(_step(raw, i, source) for i, raw in enumerate(spec.steps, 1))
    resizes = any(isinstance(s, Resize | Realistic) for s in steps)
    try:
        return Preset(
            name=spec.name if spec.name is not None else Path(source).stem,
            steps=steps,
            scale=spec.scale if spec.scale is not None else (4 if resizes else 1),
            float_output=spec.float_output,
            description=spec.description,
        )
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


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
            "(docs/degradations.md: every range)"
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
