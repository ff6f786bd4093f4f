"""The networks the sections time: ours or the reference RCAN, and how they are run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from reference import ReferenceRCAN  # benchmarks/reference.py (benchmarks/ is on sys.path)
from torch import nn

from twostage.models import build_model, preset_spec
from twostage.models.common import ModelSpec

# --smoke (a check of the benchmarks, seconds): every preset becomes a tiny one.
SMOKE_PRESETS: dict[str, str] = {}


def spec_of(preset: str, scale: int) -> ModelSpec:
    return preset_spec(SMOKE_PRESETS.get(preset, preset), scale=scale)


def build(spec: ModelSpec, *, reference: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if reference:
        return ReferenceRCAN(
            scale=spec.scale,
            n_resgroups=spec.n_resgroups,
            n_resblocks=spec.n_resblocks,
            n_feats=spec.n_feats,
            reduction=spec.reduction,
        )
    return build_model(spec)


@dataclass(frozen=True)
class Variant:
    """How a network is run: memory format, bf16 autocast, torch.compile."""

    channels_last: bool = False
    bf16: bool = False  # torch.autocast bf16: activations in bf16
    bf32: bool = False  # oneDNN fp32 convs with bf16 multiplicands (AMX), fp32 activations
    compile: bool = False

    @property
    def label(self) -> str:
        parts = ["channels_last" if self.channels_last else "contiguous"]
        if self.bf16:
            parts.append("bf16 autocast")
        if self.bf32:
            parts.append("bf32 convs")
        if self.compile:
            parts.append("compile")
        return " + ".join(parts)


@contextlib.contextmanager
def conv_math(variant: Variant) -> Iterator[None]:
    """bf32: oneDNN computes fp32 convolutions from bf16-rounded inputs and weights with fp32
    accumulation (AMX on CPUs that have it); everything else stays fp32."""
    if not variant.bf32:
        yield
        return
    conv = torch.backends.mkldnn.conv  # type: ignore[attr-defined]
    before = conv.fp32_precision
    conv.fp32_precision = "bf16"
    try:
        yield
    finally:
        conv.fp32_precision = before
