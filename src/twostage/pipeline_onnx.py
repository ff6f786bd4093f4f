"""`.onnx` pipelines (what `twostage export` writes) run by onnxruntime, as `Pipeline`s are.

`OnnxPipeline` has `Pipeline.restore`'s interface: the same tiling and self-ensemble
(tiling.py), fp32 only. The graph is the full-strength pipeline (`twostage export` refuses a
bundle whose default strength is not 1), so a given `strength` is refused here. Its
metadata (`scale`, `activation_floats_per_pixel`) is range-checked; without it the scale is
probed on a 16×16 input. The model must take and give N×3×H×W floats of any height and width.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twostage.errors import UserError, short
from twostage.limits import MAX_SCALE
from twostage.models.inference import Precision
from twostage.tiling import (
    DEFAULT_WIDTH,
    Tile,
    activation_floats_per_pixel,
    auto_tile,
    free_memory,
    restore_image,
    self_ensemble,
)

__all__ = ["OnnxPipeline"]


class OnnxPipeline:
    """An exported `.onnx` pipeline run by onnxruntime, with `Pipeline`'s `restore` interface."""

    def __init__(self, path: str | Path, *, device: str | torch.device | None = "cpu") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.device_name = _onnx_device(device)
        providers = ["CPUExecutionProvider"]
        if self.device_name == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"cannot load ONNX model {self.path}: {exc}") from None
        _check_onnx_io(self.path, self.session)
        self.input_name = self.session.get_inputs()[0].name
        self.precision = Precision("fp32", "ONNX models run in fp32")
        props = self.session.get_modelmeta().custom_metadata_map
        self.name = props.get("name", self.path.stem)
        scale = props.get("scale")
        self.scale = self._probe_scale() if scale is None else self._meta("scale", scale)
        floats = props.get("activation_floats_per_pixel")
        self._floats = (
            activation_floats_per_pixel([(DEFAULT_WIDTH, self.scale)])
            if floats is None
            else self._meta("activation_floats_per_pixel", floats)
        )

    def _meta(self, key: str, text: str) -> Any:
        """Metadata `key`: scale an integer 1..MAX_SCALE, the float estimate finite and > 0."""
        try:
            value = int(text) if key == "scale" else float(text)
        except ValueError:
            value = math.nan
        if not (1 <= value <= MAX_SCALE if key == "scale" else 0 < value < math.inf):
            expected = f"an integer 1 to {MAX_SCALE}" if key == "scale" else "a number > 0"
            raise UserError(f"{self.path}: metadata {key}={short(text)}: expected {expected}")
        return value

    def _run(self, patch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: patch})[0]

    def _probe_scale(self) -> int:
        """The scale of a model without `scale` metadata, from its output on a 16×16 input."""
        try:
            height, width = self._run(np.zeros((1, 3, 16, 16), dtype=np.float32)).shape[-2:]
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"{self.path}: cannot run on a 16×16 input: {exc}") from None
        if height != width or height % 16 or not 1 <= height // 16 <= MAX_SCALE:
            raise UserError(
                f"{self.path}: output {height}×{width} for a 16×16 input is not an "
                f"integer scale of 1 to {MAX_SCALE}"
            )
        return height // 16

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self._run(x.detach().float().cpu().numpy())
        return torch.from_numpy(np.clip(y, 0.0, 1.0))

    def resolve_strength(self, strength: float | None) -> None:
        """None; a given strength is refused: the graph is the full-strength pipeline."""
        if strength is not None:
            raise UserError(
                f"strength {short(strength)}: {self.path} is an ONNX graph of the full-strength "
                "pipeline; it has no strength control (restore the bundle instead)"
            )

    def floats_per_pixel(self) -> float:
        return self._floats

    def restore(
        self,
        img: np.ndarray,
        *,
        tile: Tile = None,
        tile_pad: int = 16,
        device: str | torch.device | None = None,
        progress: bool = False,
        dtype: type = np.float32,
        strength: float | None = None,
        tta: bool = False,
    ) -> np.ndarray:
        """As `Pipeline.restore`; `device` must match the one given at load (or be None)."""
        self.resolve_strength(strength)
        if device is not None and _onnx_device(device) != self.device_name:
            raise UserError(f"{self.path} was loaded for {self.device_name}, not {device}")
        if tile == "auto":
            dev = torch.device("cuda" if self.device_name == "cuda" else "cpu")
            tile = auto_tile(
                img.shape[0],
                img.shape[1],
                floats_per_pixel=self._floats,
                tile_pad=tile_pad,
                budget=free_memory(dev),
            )
        return restore_image(
            self_ensemble(self._run) if tta else self._run,
            img,
            scale=self.scale,
            tile=tile,
            tile_pad=tile_pad,
            progress=progress,
            dtype=dtype,
        )


def _check_onnx_io(path: Path, session: Any) -> None:
    """One N×3×H×W float input of any height and width, and an N×3×H×W float output: what
    twostage feeds and reads."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(short(i.name) for i in inputs)
        raise UserError(f"{path}: the model has {len(inputs)} inputs ({names}); expected one")
    for role, arg in (("input", inputs[0]), ("output", session.get_outputs()[0])):
        shape = list(arg.shape)
        channels = shape[1] if len(shape) == 4 else None
        if len(shape) != 4 or (isinstance(channels, int) and channels != 3):
            raise UserError(
                f"{path}: the model's {role} has shape {shape}; twostage runs models "
                "whose input and output are N×3×H×W (RGB)"
            )
        if arg.type != "tensor(float)":
            raise UserError(f"{path}: the model's {role} is {arg.type}; expected tensor(float)")
    if any(isinstance(n, int) for n in inputs[0].shape[2:]):
        raise UserError(
            f"{path}: the model's input has a fixed size {list(inputs[0].shape)}; twostage "
            "needs any height and width (export with dynamic axes)"
        )


def _onnx_device(device: str | torch.device | None) -> str:
    """ "cuda" when asked for (or "auto" and onnxruntime has CUDA), else "cpu"."""
    import onnxruntime as ort

    name = device.type if isinstance(device, torch.device) else (device or "cpu")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if name == "auto":
        return "cuda" if has_cuda else "cpu"
    if name == "cuda" and not has_cuda:
        raise UserError("--device cuda: this onnxruntime has no CUDAExecutionProvider")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r} (expected auto, cpu or cuda)")
    return name
