"""Running a network for inference: device choice, eval set-up, precision.

Callers wrap the forward pass in `torch.inference_mode()` and `precision_context(mode, device)`:

    model = model.eval().to(device)
    chosen = resolve_precision("auto", device)
    with torch.inference_mode(), precision_context(chosen.mode, device):
        y = model(x.to(device)).float()

**Precision modes.** `fp32`: plain float32. `bf32`: fp32 tensors, but oneDNN computes the
convolutions and matmuls from bf16-rounded inputs and weights with fp32 accumulation (CPU only).
`bf16`: autocast to bf16 (activations in bf16); our RCAN/EDSR keep their last conv and output in
fp32 (`common.reconstruct`). `auto`: bf16 where the hardware runs it natively (AMX or
AVX512-BF16 CPUs, bf16-capable GPUs), else fp32; a CPU without bf16 instructions would emulate
it 35-70x slower.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from twostage.errors import UserError

PRECISIONS = ("auto", "fp32", "bf32", "bf16")


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


@dataclass(frozen=True)
class Precision:
    """A resolved precision mode (fp32, bf32 or bf16) and why it was chosen."""

    mode: str
    reason: str

    def __str__(self) -> str:
        return f"{self.mode} ({self.reason})"


def native_bf16(device: torch.device) -> str | None:
    """What makes bf16 native on `device` ("CPU has AMX", ...), or None where it is emulated."""
    if device.type == "cuda":
        return "GPU has bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else None
    if device.type != "cpu":
        return None
    query = getattr(torch._C._cpu, "_get_cpu_capability", None)  # torch >= 2.6
    caps = query() if query is not None else {}
    if caps.get("amx_bf16"):
        return "CPU has AMX"
    if caps.get("avx512_bf16"):
        return "CPU has AVX512-BF16"
    return None


def resolve_amp(amp: str, device: torch.device) -> str:
    """run.amp on `device`: "auto" → "bf16" where bf16 is native (`native_bf16`), else "none";
    any other value as given."""
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(device) else "none"


def resolve_precision(requested: str, device: torch.device | str) -> Precision:
    """`--precision` (auto, fp32, bf32, bf16) on `device` → the mode to run and why."""
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise UserError(f"--precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    native = native_bf16(device)
    if requested == "auto":
        if native:
            return Precision("bf16", f"auto: {native}")
        return Precision("fp32", f"auto: no native bf16 on {device.type}")
    if requested == "bf32" and device.type != "cpu":
        raise UserError(f"--precision bf32 is a CPU (oneDNN) mode; on {device} use bf16 or fp32")
    if requested != "fp32" and not native:
        return Precision(requested, f"no native bf16 on {device.type}: emulated, much slower")
    return Precision(requested, "requested")


@contextlib.contextmanager
def precision_context(mode: str, device: torch.device | str) -> Iterator[None]:
    """Run the block in `mode` (see the module docstring); global settings are restored."""
    device = torch.device(device)
    if mode == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif mode == "bf32":
        with _onednn_bf16_math():
            yield
    elif mode == "fp32":
        yield
    else:
        raise UserError(f"precision mode {mode!r}: expected fp32, bf32 or bf16")


@contextlib.contextmanager
def _onednn_bf16_math() -> Iterator[None]:
    """oneDNN's fp32 convs and matmuls with bf16 multiplicands (fp32 accumulation)."""
    backends = (torch.backends.mkldnn.conv, torch.backends.mkldnn.matmul)  # type: ignore[attr-defined]
    before = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = "bf16"
        yield
    finally:
        for b, value in zip(backends, before):
            b.fp32_precision = value
