"""RCAN (Zhang et al., ECCV 2018), laid out exactly as the official RCAN / EDSR-PyTorch code.

head conv → `n_resgroups` residual groups (each `n_resblocks` RCABs and a closing conv, with a
group-level skip) → conv → long skip → sub-pixel upsampler → tail conv. The DIV2K mean shift
and the [0, 255] range are inside: the module takes and returns N×3×H×W floats in [0, 1].
Scale 1 has no upsampler (the paper's domain-mapping network).

State-dict keys: `sub_mean.*`, `head.0.*`, `body.{g}.body.{b}.body.{0,2}.*` (RCAB convs),
`body.{g}.body.{b}.body.3.conv_du.{0,2}.*` (channel attention), `body.{g}.body.{B}.*` (group
conv), `body.{G}.*`, `tail.0.{0,2,…}.*` (upsampler), `tail.1.*`, `add_mean.*`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from twostage.models.common import (
    RGB_RANGE,
    ChannelAttention,
    MeanShift,
    ModelSpec,
    conv3x3,
    reconstruct,
    upsampler,
)


class RCAB(nn.Module):
    """Residual channel attention block: x + CA(conv(ReLU(conv(x)))). No BN, no res_scale
    (the official RCAB ignores it)."""

    def __init__(self, *, n_feats: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(n_feats, n_feats),
            nn.ReLU(inplace=True),
            conv3x3(n_feats, n_feats),
            ChannelAttention(n_feats=n_feats, reduction=reduction),
        )

    def forward(self, x: Tensor) -> Tensor:
        conv1, relu, conv2, attention = self.body
        res = conv2(relu(conv1(x)))
        # x + res · gates in one pass (addcmul): no res · gates temporary, one read of res
        return torch.addcmul(x, res, attention.gates(res))


class ResidualGroup(nn.Module):
    """`n_resblocks` RCABs and a 3×3 conv, with a skip over the whole group."""

    def __init__(self, *, n_feats: int, n_resblocks: int, reduction: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            RCAB(n_feats=n_feats, reduction=reduction) for _ in range(n_resblocks)
        ]
        blocks.append(conv3x3(n_feats, n_feats))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        res = self.body(x)
        res += x
        return res


class RCAN(nn.Module):
    """Residual Channel Attention Network; `scale` 1 (no upsampler), 2, 3, 4 or 8."""

    def __init__(
        self, *, scale: int, n_resgroups: int, n_resblocks: int, n_feats: int, reduction: int = 16
    ) -> None:
        super().__init__()
        # Validates the hyper-parameters (raises UserError) and is what `.spec` returns.
        self.spec = ModelSpec(
            arch="rcan",
            scale=scale,
            n_feats=n_feats,
            n_resblocks=n_resblocks,
            n_resgroups=n_resgroups,
            reduction=reduction,
        )
        self.scale = scale
        self.sub_mean = MeanShift(sign=-1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        groups: list[nn.Module] = [
            ResidualGroup(n_feats=n_feats, n_resblocks=n_resblocks, reduction=reduction)
            for _ in range(n_resgroups)
        ]
        groups.append(conv3x3(n_feats, n_feats))
        self.body = nn.Sequential(*groups)
        self.tail = nn.Sequential(upsampler(scale=scale, n_feats=n_feats), conv3x3(n_feats, 3))
        self.add_mean = MeanShift(sign=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x, gain_in=RGB_RANGE))
        res = self.body(x)
        res += x
        return reconstruct(self.tail, self.add_mean, res)
