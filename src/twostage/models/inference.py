"""Running a network for inference: device choice, eval set-up, mixed precision.

Callers wrap the forward pass in `torch.inference_mode()` and `autocast(device)`:

    model = prepare_for_inference(model, device)
    with torch.inference_mode(), autocast(device):
        y = model(x.to(device)).float()
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch
from torch import nn

from twostage.errors import UserError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The ONE device resolver: a torch.device as is; None or 'auto' (CUDA when available,
    else CPU), 'cpu', 'cuda' or 'cuda:N'; unavailable CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    name = device or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")


def prepare_for_inference(
    model: nn.Module,
    device: torch.device | str,
    *,
    channels_last: bool | None = None,
    compile: bool = False,
) -> nn.Module:
    """`model` in eval mode on `device`, in fp32 (gradients are the caller's business:
    use `torch.inference_mode()`).

    `channels_last` (default: on) stores conv weights NHWC; a convolution with NHWC weights
    returns NHWC activations, so inputs need not be converted. cuDNN and oneDNN (CPU) both run
    NHWC convolutions without the layout reorders NCHW costs: measured on a 2-core AVX-512 CPU
    (BENCHMARKS.md), inference is 1.1× faster for rcan-paper and 1.4× for the 32-channel CPU
    presets, with identical results up to float rounding. `compile=True` returns
    `torch.compile(model)` (the model's attributes stay reachable): a few % faster on CPU after
    a compilation of about a minute, so it is not the default.
    """
    device = torch.device(device)
    model = model.eval().to(device=device, dtype=torch.float32)
    if channels_last is None:
        channels_last = True
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def autocast(device: torch.device | str) -> AbstractContextManager[object]:
    """bf16 autocast on CUDA devices that support it; a no-op elsewhere (CPU stays fp32).

    bf16 rather than fp16: EDSR/RCAN work on the [0, 255] range inside, where fp16's small
    exponent range is a risk, and bf16 needs no loss scaling.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
