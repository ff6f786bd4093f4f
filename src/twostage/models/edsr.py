"""EDSR (Lim et al., CVPRW 2017), laid out exactly as the official EDSR-PyTorch code.

head conv → `n_resblocks` residual blocks (conv-ReLU-conv, residual × `res_scale`, no BN) →
conv → long skip → sub-pixel upsampler → tail conv, with the DIV2K mean shift and the
[0, 255] range inside: the module takes and returns N×3×H×W floats in [0, 1].

State-dict keys: `sub_mean.*`, `head.0.*`, `body.{i}.body.{0,2}.*`, `body.{n}.*`,
`tail.0.{0,2,…}.*`, `tail.1.*`, `add_mean.*`.
"""

from __future__ import annotations

from torch import Tensor, nn

from twostage.models.common import (
    RGB_RANGE,
    MeanShift,
    ModelSpec,
    conv3x3,
    reconstruct,
    upsampler,
)


class ResBlock(nn.Module):
    """x + res_scale · conv(ReLU(conv(x)))."""

    def __init__(self, *, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(n_feats, n_feats), nn.ReLU(inplace=True), conv3x3(n_feats, n_feats)
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        res = self.body(x)
        if self.res_scale != 1.0:
            res = res * self.res_scale
        res += x
        return res


class EDSR(nn.Module):
    """Enhanced Deep Super-Resolution network; `scale` 1 (no upsampler), 2, 3, 4 or 8."""

    def __init__(
        self, *, scale: int, n_resblocks: int, n_feats: int, res_scale: float = 1.0
    ) -> None:
        super().__init__()
        # Validates the hyper-parameters (raises UserError) and is what `.spec` returns.
        self.spec = ModelSpec(
            arch="edsr", scale=scale, n_feats=n_feats, n_resblocks=n_resblocks, res_scale=res_scale
        )
        self.scale = scale
        self.sub_mean = MeanShift(sign=-1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        blocks: list[nn.Module] = [
            ResBlock(n_feats=n_feats, res_scale=res_scale) for _ in range(n_resblocks)
        ]
        blocks.append(conv3x3(n_feats, n_feats))
        self.body = nn.Sequential(*blocks)
        self.tail = nn.Sequential(upsampler(scale=scale, n_feats=n_feats), conv3x3(n_feats, 3))
        self.add_mean = MeanShift(sign=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x, gain_in=RGB_RANGE))
        res = self.body(x)
        res += x
        return reconstruct(self.tail, self.add_mean, res)
