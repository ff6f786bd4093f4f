"""`twostage export`: a model or pipeline to ONNX with dynamic height/width, checked.

The graph is traced with PyTorch's TorchScript-based exporter (`dynamo=False`: the newer
exporter needs `onnxscript`, which is not a dependency). The traced size (32×32) differs from
the check size (37×45, odd on purpose), so a graph that baked a size in fails the check. The
check runs the written file with onnxruntime on a random image and compares it with PyTorch:
max abs diff ≤ 1e-4, else `UserError` and no file is left behind.

A pipeline that rounds its intermediate to the 8-bit grid cannot be compared value by value:
a 1e-7 difference between onnxruntime's and PyTorch's convolutions now and then lands on the
other side of a rounding step and moves that value by 1/255. For such pipelines the check
compares the same graph exported *without* the rounding (≤ 1e-4, the number returned), and
the written graph must agree within 1e-4 on at least 99.9 % of the output values.

The graph is the full-strength pipeline: strength (the bicubic blend) is not carried into
ONNX, so a bundle whose default strength is not 1 is refused rather than exported at another
strength than it restores at.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import onnx as onnx_lib
import torch

from twostage.errors import UserError
from twostage.ops.files import atomic_path, check_output_file
from twostage.pipeline import Pipeline, load_pipeline

__all__ = ["TOLERANCE", "export_onnx"]

TOLERANCE = 1e-4
# Opsets checked to export and run: older ones onnxruntime cannot run (Mul-6), newer ones
# torch 2.13's TorchScript exporter does not write. Checked before tracing, because a refused
# opset makes the exporter print the whole Torch IR graph.
OPSETS = range(7, 24)
TRACE_SIZE = (32, 32)
CHECK_SIZE = (37, 45)
ROUNDING_FLIP_SHARE = 1e-3  # share of output values a rounded intermediate may move


def _export(pipe: Pipeline, target: Path | io.BytesIO, *, opset: int) -> None:
    example = torch.rand(1, 3, *TRACE_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(
                pipe,
                (example,),
                target,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={
                    "input": {0: "batch", 2: "height", 3: "width"},
                    "output": {0: "batch", 2: "out_height", 3: "out_width"},
                },
            )
        except Exception as exc:  # the exporter raises many types for unsupported ops/opsets
            raise UserError(f"ONNX export failed (--opset {opset}): {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _onnxruntime_output(model: Path | bytes, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model
    try:
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(
            f"ONNX check failed: onnxruntime cannot run it: {_first_line(exc)}"
        ) from None


def _add_metadata(path: Path, pipe: Pipeline) -> None:
    """Store scale, name and the tiling memory estimate in the graph (read by OnnxPipeline)."""
    model = onnx_lib.load(str(path))
    props = {
        "scale": str(pipe.scale),
        "name": pipe.name,
        "activation_floats_per_pixel": f"{pipe.floats_per_pixel():.1f}",
        "producer": "twostage",
    }
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx_lib.save(model, str(path))


def export_onnx(
    model: str | Path, onnx: str | Path, *, opset: int = 17, overwrite: bool = False
) -> float:
    """Export `model` (anything `load_pipeline` reads but .onnx) to `onnx`, checked; max diff.

    `onnx` may never be the model file (however named); an existing file is replaced only with
    `overwrite`."""
    model, onnx_path = Path(model), Path(onnx)
    if model.suffix.lower() == ".onnx":
        raise UserError(f"--model {model} is already an ONNX file")
    if opset not in OPSETS:
        raise UserError(f"--opset {opset}: expected {OPSETS.start} to {OPSETS.stop - 1}")
    check_output_file(onnx_path, "--onnx", inputs=[model], overwrite=overwrite)
    pipe = load_pipeline(model, device="cpu")
    assert isinstance(pipe, Pipeline)
    if pipe.strength != 1.0:
        raise UserError(
            f"{model}: its default strength is {pipe.strength:g}, and ONNX export carries no "
            "strength (only the full-strength pipeline, 1); not exported"
        )
    pipe.eval()
    x = torch.rand(1, 3, *CHECK_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = pipe(x).numpy()
    rounds = pipe.quantize_intermediate and len(pipe.stages()) > 1
    with atomic_path(onnx_path) as tmp:
        _export(pipe, tmp, opset=opset)
        _add_metadata(tmp, pipe)
        got = _onnxruntime_output(tmp, x)
        if got.shape != expected.shape:
            raise UserError(
                f"ONNX check failed: output shape {got.shape}, PyTorch {expected.shape}"
            )
        gap = np.abs(got - expected)
        diff = float(gap.max())
        if rounds and diff > TOLERANCE:
            moved = float((gap > TOLERANCE).mean())
            exact = copy.deepcopy(pipe)
            exact.quantize_intermediate = False
            buffer = io.BytesIO()
            _export(exact, buffer, opset=opset)
            with torch.inference_mode():
                exact_expected = exact(x).numpy()
            diff = float(np.abs(_onnxruntime_output(buffer.getvalue(), x) - exact_expected).max())
            if moved > ROUNDING_FLIP_SHARE:
                raise UserError(
                    f"ONNX check failed: {moved:.2%} of output values differ from PyTorch by more "
                    f"than {TOLERANCE:g} (more than intermediate rounding explains); not written"
                )
        if not diff <= TOLERANCE:  # NaN included
            raise UserError(
                f"ONNX check failed: onnxruntime vs PyTorch max abs diff {diff:.2e} > "
                f"{TOLERANCE:g}; {onnx_path} not written"
            )
    return diff
