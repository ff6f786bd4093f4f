"""Networks: RCAN and EDSR as in the paper, named presets, size and cost.

`build_model(spec)` gives an `nn.Module` taking and returning N×3×H×W floats in [0, 1], with
`.spec` (its `ModelSpec`) and `.scale`. Checkpoint formats live in `models.checkpoints`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from twostage.errors import UserError
from twostage.models.common import SCALES, ModelSpec, upsampler_steps
from twostage.models.edsr import EDSR
from twostage.models.rcan import RCAN

__all__ = [
    "PRESETS",
    "SCALES",
    "ModelSpec",
    "Preset",
    "build_model",
    "conv_macs",
    "count_params",
    "preset_spec",
    "presets_table",
]


@dataclass(frozen=True)
class Preset:
    """A named architecture and size; the scale is chosen where it is used."""

    description: str
    arch: str
    n_feats: int
    n_resblocks: int
    n_resgroups: int = 0
    reduction: int = 16
    res_scale: float = 1.0

    def spec(self, scale: int) -> ModelSpec:
        return ModelSpec(
            arch=self.arch,
            scale=scale,
            n_feats=self.n_feats,
            n_resblocks=self.n_resblocks,
            n_resgroups=self.n_resgroups,
            reduction=self.reduction,
            res_scale=self.res_scale,
        )


PRESETS: dict[str, Preset] = {
    "rcan-paper": Preset("the paper's mapping and SR network", "rcan", 64, 8, 10, 16),
    "edsr-paper": Preset("the paper's EDSR baseline (8 blocks, as RCAN's width)", "edsr", 64, 8),
    "rcan-official": Preset("RCAN as published (Zhang et al. 2018)", "rcan", 64, 20, 10, 16),
    "edsr-baseline": Preset("EDSR-PyTorch's baseline", "edsr", 64, 16),
    "rcan-cpu": Preset("small RCAN for the CPU demo profile", "rcan", 32, 3, 2, 8),
    "rcan-small": Preset("RCAN of the shipped model (ship profile)", "rcan", 48, 3, 3, 8),
    "edsr-cpu": Preset("small EDSR for the CPU demo profile", "edsr", 32, 4),
    "rcan-tiny": Preset("smallest RCAN, for tests", "rcan", 8, 1, 1, 4),
    "edsr-tiny": Preset("smallest EDSR, for tests", "edsr", 8, 1),
}


def preset_spec(name: str, *, scale: int) -> ModelSpec:
    """The spec of preset `name` at `scale`; an unknown name is a UserError listing them."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].spec(scale)


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised network (PyTorch's default init, as the official code)."""
    if spec.arch == "rcan":
        return RCAN(
            scale=spec.scale,
            n_resgroups=spec.n_resgroups,
            n_resblocks=spec.n_resblocks,
            n_feats=spec.n_feats,
            reduction=spec.reduction,
        )
    return EDSR(
        scale=spec.scale,
        n_resblocks=spec.n_resblocks,
        n_feats=spec.n_feats,
        res_scale=spec.res_scale,
    )


def count_params(model: nn.Module) -> int:
    """Number of parameters (the fixed mean shifts are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())


def conv_macs(spec: ModelSpec, height: int, width: int) -> int:
    """Multiply-accumulates of one forward pass on a 1×3×height×width input, counted
    analytically from the spec: every convolution (3×3, the 1×1 channel attention on its 1×1
    map and the 1×1 mean shifts). Bias additions, ReLU, pooling and pixel shuffle are free."""
    c, hw = spec.n_feats, height * width
    conv3 = 9 * c * c  # MACs per output pixel of a 3×3 C→C conv
    block = 2 * conv3 * hw
    if spec.arch == "rcan":
        squeezed = c // spec.reduction
        block += 2 * c * squeezed  # channel attention: two 1×1 convs on one pixel
        body = spec.n_resgroups * (spec.n_resblocks * block + conv3 * hw) + conv3 * hw
    else:
        body = spec.n_resblocks * block + conv3 * hw
    head = 9 * 3 * c * hw
    upsample, pixels = 0, hw
    for step in upsampler_steps(spec.scale):
        upsample += 9 * c * (step * step * c) * pixels
        pixels *= step * step
    tail = 9 * c * 3 * pixels
    mean_shifts = 9 * hw + 9 * pixels
    return mean_shifts + head + body + upsample + tail


def _param_count(spec: ModelSpec) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return count_params(build_model(spec))


def presets_table(*, size: int = 96) -> str:
    """The text `twostage models` prints: each preset with its parameter count and forward
    GMACs for a size×size input at scales 1, 2, 3 and 4."""
    scales = (1, 2, 3, 4)
    header = (
        ["preset", "arch", "structure"]
        + [f"params ×{s}" for s in scales]
        + [f"GMACs ×{s}" for s in scales]
    )
    rows = [header]
    for name, preset in PRESETS.items():
        specs = [preset.spec(s) for s in scales]
        rows.append(
            [name, preset.arch, specs[0].describe()]
            + [f"{_param_count(s):,}" for s in specs]
            + [f"{conv_macs(s, size, size) / 1e9:.2f}" for s in specs]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for r in rows:
        cells = [r[i].ljust(widths[i]) if i < 3 else r[i].rjust(widths[i]) for i in range(len(r))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n\nGMACs: one forward pass on a {size}×{size} input."
