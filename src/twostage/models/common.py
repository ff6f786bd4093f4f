"""Building blocks shared by RCAN and EDSR, and the `ModelSpec` that describes a network.

Module and parameter names follow the official EDSR-PyTorch / RCAN code, so that a model's
`state_dict()` *is* the official checkpoint layout (`head.0`, `body.…`, `tail.0.0`, `tail.1`,
`sub_mean`, `add_mean`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twostage.errors import UserError
from twostage.parse import field_names, parse

# Mean RGB colour of DIV2K's training images, subtracted on the [0, 255] range (official value).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
# The official models work on [0, 255]; ours take [0, 1] and scale inside.
RGB_RANGE = 255.0

ARCHS = ("rcan", "edsr")
SCALES = (1, 2, 3, 4, 8)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network: architecture, scale and hyper-parameters.

    `n_resgroups` and `reduction` are RCAN's (0 and unused for EDSR). `res_scale` multiplies
    EDSR's residual branches; official RCAN ignores it, so an RCAN spec must keep 1.0.
    """

    arch: str
    scale: int
    n_feats: int
    n_resblocks: int
    n_resgroups: int = 0
    reduction: int = 16
    res_scale: float = 1.0

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> UserError:
            return UserError(f"model spec {field}={getattr(self, field)!r}: {why}")

        if self.arch not in ARCHS:
            raise bad("arch", f"expected one of {', '.join(ARCHS)}")
        if self.scale not in SCALES:
            raise bad("scale", f"expected one of {', '.join(map(str, SCALES))}")
        if self.n_feats < 1:
            raise bad("n_feats", "must be at least 1")
        if self.n_resblocks < 1:
            raise bad("n_resblocks", "must be at least 1")
        if self.arch == "rcan":
            if self.n_resgroups < 1:
                raise bad("n_resgroups", "RCAN needs at least one residual group")
            if self.reduction < 1 or self.n_feats % self.reduction:
                raise bad("reduction", f"must divide n_feats={self.n_feats}")
            if self.res_scale != 1.0:
                raise bad("res_scale", "official RCAN has no residual scaling; use 1.0")
        else:
            if self.n_resgroups != 0:
                raise bad("n_resgroups", "EDSR has no residual groups; use 0")
            if not self.res_scale > 0:
                raise bad("res_scale", "must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of `to_dict` (through `parse`); unknown or missing fields are an error
        naming them all, a wrong type one naming the field."""
        fields = field_names(cls)
        unknown = sorted(set(data) - set(fields)) if isinstance(data, dict) else []
        if unknown:
            raise UserError(f"model spec: unknown field(s) {', '.join(map(str, unknown))}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [n for n in required if isinstance(data, dict) and n not in data]
        if missing:
            raise UserError(f"model spec: missing field(s) {', '.join(missing)}")
        return parse(cls, data, "model spec")

    def describe(self) -> str:
        """A short human-readable structure, e.g. `10×8 RCAB, 64 ch, r16`."""
        if self.arch == "rcan":
            return (
                f"{self.n_resgroups}×{self.n_resblocks} RCAB, {self.n_feats} ch, r{self.reduction}"
            )
        res = "" if self.res_scale == 1.0 else f", res {self.res_scale:g}"
        blocks = "block" if self.n_resblocks == 1 else "blocks"
        return f"{self.n_resblocks} {blocks}, {self.n_feats} ch{res}"


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The 3×3 'same' convolution with bias used everywhere in EDSR/RCAN."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True)


class MeanShift(nn.Module):
    """Official EDSR/RCAN `MeanShift`: a fixed 1×1 conv that adds or removes the RGB mean.

    `weight` (3×3×1×1) and `bias` (3) are buffers: saved in the state dict under the official
    names (`sub_mean.weight`, …) but never trained. `forward(x, gain_in, gain_out)` computes
    `(W (gain_in·x) + b) · gain_out` in one conv, so the [0, 1] ↔ [0, 255] range change costs
    nothing extra.
    """

    weight: Tensor
    bias: Tensor

    def __init__(
        self,
        *,
        sign: int,
        rgb_range: float = RGB_RANGE,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1))
        self.register_buffer("bias", sign * rgb_range * torch.tensor(rgb_mean))

    def forward(self, x: Tensor, gain_in: float = 1.0, gain_out: float = 1.0) -> Tensor:
        return F.conv2d(x, self.weight * (gain_in * gain_out), self.bias * gain_out)


class ChannelAttention(nn.Module):
    """RCAN's channel attention: global mean → 1×1 conv C→C/r → ReLU → 1×1 conv → sigmoid.

    Named `conv_du` as in the official `CALayer` (keys `conv_du.0`, `conv_du.2`).
    """

    def __init__(self, *, n_feats: int, reduction: int) -> None:
        super().__init__()
        squeezed = n_feats // reduction
        self.conv_du = nn.Sequential(
            nn.Conv2d(n_feats, squeezed, 1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, n_feats, 1, bias=True),
            nn.Sigmoid(),
        )

    def gates(self, x: Tensor) -> Tensor:
        """The per-channel weights, N×C×1×1 in (0, 1)."""
        return self.conv_du(x.mean(dim=(2, 3), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gates(x)


def reconstruct(tail: nn.Sequential, add_mean: MeanShift, features: Tensor) -> Tensor:
    """The official `tail` (upsampler, last conv) and `add_mean`, back to [0, 1].

    The last conv and the mean shift run in fp32 even under autocast: their output is on the
    [0, 255] range, where bf16's 8-bit mantissa would be off by up to half an 8-bit level.
    They are a tiny part of the cost.
    """
    upsampled = tail[0](features)
    with torch.autocast(device_type=upsampled.device.type, enabled=False):
        return add_mean(tail[1](upsampled.float()), gain_out=1.0 / RGB_RANGE)


def upsampler(*, scale: int, n_feats: int) -> nn.Sequential:
    """Official sub-pixel upsampler: for 2^n, n × [conv C→4C, PixelShuffle(2)]; for 3,
    conv C→9C, PixelShuffle(3). Scale 1 gives an empty stage (the paper's mapping network
    'without the upsampling layer', which is also how spandrel builds RCAN ×1).
    """
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
    else:
        raise UserError(f"model scale {scale}: expected a power of two or 3")
    return nn.Sequential(*layers)


def upsampler_steps(scale: int) -> list[int]:
    """The pixel-shuffle factors of `upsampler(scale=…)`, in order (empty for scale 1)."""
    if scale == 3:
        return [3]
    return [2] * int(math.log2(scale))
