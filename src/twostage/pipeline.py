"""Two-stage inference: stage 1 maps into the intermediate domain, stage 2 restores from it.

A `Pipeline` is stage 1 (a mapping network, scale 1 or 2, or none) followed by stage 2 (one
network, or the same ×2 network applied twice: the paper's x2x2). It runs on whole images of
any size through `restore`, tile by tile when asked, and saves to / loads from one **bundle**
`.safetensors` file (all weights + JSON metadata), the file `twostage restore --model` takes.

**The intermediate image.** The paper writes the mapped sets to disk as images and stage 2
reads them back, so by default the intermediate (the output of stage 1, and of the first ×2 of
x2x2) is clamped to [0, 1] and rounded to the 8-bit grid, exactly as a PNG on disk would be
(`quantize_intermediate=True`, `intermediate_bit_depth=8`; use 16 for the blur domain, whose
mapped sets are 16-bit). With `quantize_intermediate=False` it is only clamped.

**Strength** s (0 to 1; `strength`, `restore --strength`) blends stage 1's output with the
plain image of the input in the intermediate domain, before that rounding:
`s·stage1(x) + (1−s)·bicubic(x)`, where bicubic is MATLAB's ×2 (`ops.resize.imresize`) for a
×2 map and the input itself for a ×1 map. s = 1 is stage 1 alone (bit-exact, stage 1 only
runs), s = 0 the off-the-shelf path (stage 2 on the rounded bicubic image; stage 1 does not
run). A bundle stores its default (`strength` metadata; 1 when absent, as older bundles ran).

**Tiling** (`tile`, `tile_pad`, `tile="auto"`) and the self-ensemble (`tta`) are tiling.py's;
`.onnx` files run through pipeline_onnx.py's `OnnxPipeline`.

**Precision** (`models.inference`): `load_pipeline(..., precision="auto"|"fp32"|"bf32"|"bf16")`
resolves the mode for the load device and keeps it in `pipe.precision` (default fp32, so
tables stay reproducible across machines); `restore(precision=...)` overrides it for one call.
`auto` picks fp32 when a stage is not a twostage network: only ours keep their last conv in fp32.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from twostage import __version__
from twostage.errors import UserError, short
from twostage.limits import MAX_SCALE, MAX_STAGE2_REPEATS
from twostage.models import ModelSpec
from twostage.models.checkpoints import CheckpointError, model_from_state
from twostage.models.inference import (
    Precision,
    precision_context,
    resolve_device,
    resolve_precision,
)
from twostage.ops.files import atomic_path
from twostage.ops.imageio import quantize
from twostage.ops.resize import imresize
from twostage.parse import field_names, parse
from twostage.pipeline_onnx import OnnxPipeline
from twostage.tiling import (
    Tile,
    activation_floats_per_pixel,
    auto_tile,
    free_memory,
    restore_image,
    self_ensemble,
    stage_width,
)

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "OnnxPipeline",
    "Pipeline",
    "auto_tile",
    "check_strength",
    "is_bundle",
    "load_pipeline",
    "resolve_device",
    "restore_image",
    "with_stage2",
]

BUNDLE_FORMAT = "twostage-pipeline"
BUNDLE_VERSION = "1"
# Bundle metadata keys written by `save_bundle`; user metadata may not reuse them.
_RESERVED = (
    "format",
    "version",
    "twostage_version",
    "name",
    "scale",
    "stage1_spec",
    "stage2_spec",
    "stage2_repeats",
    "quantize_intermediate",
    "intermediate_bit_depth",
    "strength",
)


def check_strength(value: Any, what: str = "strength") -> float:
    """`value` as a strength: a real number from 0 to 1 (not a bool, NaN or a string)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not 0.0 <= float(value) <= 1.0
    ):
        raise UserError(f"{what} {short(value)}: expected a number from 0 to 1")
    return float(value)


class Pipeline(nn.Module):
    """Stage 1 (mapping, scale 1 or 2, or None) then stage 2 applied `stage2_repeats` times.

    Takes and returns N×3×H×W float tensors in [0, 1]; the output is clamped to [0, 1], the
    intermediate is clamped and (by default) rounded like an image on disk (module docstring).
    `strength`: the default blend of stage 1 with bicubic (module docstring); 1 without stage 1.
    """

    def __init__(
        self,
        stage1: nn.Module | None,
        stage2: nn.Module,
        *,
        stage2_repeats: int = 1,
        name: str = "",
        quantize_intermediate: bool = True,
        intermediate_bit_depth: int = 8,
        strength: float = 1.0,
    ) -> None:
        super().__init__()
        if not 1 <= stage2_repeats <= MAX_STAGE2_REPEATS:
            raise UserError(
                f"stage2_repeats must be from 1 to {MAX_STAGE2_REPEATS}, got {stage2_repeats}"
            )
        if intermediate_bit_depth not in (8, 16):
            raise UserError(f"intermediate_bit_depth must be 8 or 16, got {intermediate_bit_depth}")
        s1 = _scale_of(stage1) if stage1 is not None else 1
        if s1 not in (1, 2):
            raise UserError(f"stage 1 must have scale 1 or 2, got {s1}")
        if s1 * _scale_of(stage2) ** stage2_repeats > MAX_SCALE:
            raise UserError(f"the pipeline's total scale is over {MAX_SCALE}")
        strength = check_strength(strength)
        if stage1 is None and strength != 1.0:
            raise UserError(f"strength {strength:g}: a pipeline without stage 1 has strength 1")
        self.stage1 = stage1
        self.stage1_scale = s1
        self.strength = strength
        self.stage2 = stage2
        self.stage2_repeats = stage2_repeats
        self.name = name
        self.quantize_intermediate = quantize_intermediate
        self.intermediate_bit_depth = intermediate_bit_depth
        self.scale = s1 * _scale_of(stage2) ** stage2_repeats
        self.precision = Precision("fp32", "default")

    def _intermediate(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_intermediate:
            return quantize(x, bit_depth=self.intermediate_bit_depth)
        return x.clamp(0.0, 1.0)

    def _mapped(self, x: torch.Tensor, strength: float) -> torch.Tensor:
        """Stage 1's output blended with the plain (bicubic or identity) image of `x`."""
        assert self.stage1 is not None
        if strength == 1.0:
            return self.stage1(x)
        plain = x if self.stage1_scale == 1 else imresize(x, float(self.stage1_scale))
        if strength == 0.0:
            return plain
        return strength * self.stage1(x).float() + (1.0 - strength) * plain

    def resolve_strength(self, strength: float | None) -> float:
        """The strength a call runs at: `strength`, checked, or the default when None. A
        single network (no stage 1) has nothing to blend: any given strength is an error."""
        if strength is None:
            return self.strength
        value = check_strength(strength)
        if self.stage1 is None:
            raise UserError(
                f"strength {short(strength)}: {self.name or 'this model'} is a single network; "
                "strength blends a two-stage pipeline's stage 1 with bicubic (leave it out)"
            )
        return value

    def forward(self, x: torch.Tensor, strength: float | None = None) -> torch.Tensor:
        if self.stage1 is not None:
            x = self._intermediate(self._mapped(x, self.resolve_strength(strength)))
        for i in range(self.stage2_repeats):
            if i > 0:
                x = self._intermediate(x)
            x = self.stage2(x)
        return x.clamp(0.0, 1.0)

    def stages(self) -> list[nn.Module]:
        """The networks in the order they run (stage 2 once per repeat)."""
        first = [self.stage1] if self.stage1 is not None else []
        return first + [self.stage2] * self.stage2_repeats

    def floats_per_pixel(self) -> float:
        """Activation memory estimate for `tile="auto"` (module docstring)."""
        return activation_floats_per_pixel([(stage_width(m), _scale_of(m)) for m in self.stages()])

    def device(self) -> torch.device:
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def restore(
        self,
        img: np.ndarray,
        *,
        tile: Tile = None,
        tile_pad: int = 16,
        device: str | torch.device | None = None,
        progress: bool = False,
        precision: str | None = None,
        dtype: type = np.float32,
        strength: float | None = None,
        tta: bool = False,
    ) -> np.ndarray:
        """Restore one float image H×W×3 of any size → (H·s)×(W·s)×3 float32 in [0, 1].

        `device`: where to run (moves the pipeline there); None keeps its current device.
        `precision`: auto, fp32, bf32 or bf16 for this call; None keeps `self.precision`.
        `dtype` uint8 or uint16: the output quantised tile by tile (`restore_image`).
        `strength`: 0 to 1, None for the default (module docstring). `tta`: the mean over the
        8 flips and 90° rotations of the input (`self_ensemble`), 8× the time.
        """
        strength = self.resolve_strength(strength)
        dev = self.device() if device is None else resolve_device(device)
        mode = self.precision.mode if precision is None else resolve_precision(precision, dev).mode
        self.to(dev).eval()
        if tile == "auto":
            tile = auto_tile(
                img.shape[0],
                img.shape[1],
                floats_per_pixel=self.floats_per_pixel(),
                tile_pad=tile_pad,
                budget=free_memory(dev),
            )

        def run(patch: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), precision_context(mode, dev):
                y = self(torch.from_numpy(patch).to(dev), strength)
            return y.float().cpu().numpy()

        return restore_image(
            self_ensemble(run) if tta else run,
            img,
            scale=self.scale,
            tile=tile,
            tile_pad=tile_pad,
            progress=progress,
            dtype=dtype,
        )

    def save_bundle(self, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
        """Write one `.safetensors` bundle: weights `stage1.*`, `stage2.*` + JSON metadata.

        `metadata`: extra string fields, e.g. `{"domain": "bicubic-x2", "branch": "map2-..."}`.
        """
        from safetensors.torch import save_file

        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        clash = sorted(set(meta) & set(_RESERVED))
        if clash:
            raise UserError(f"bundle metadata may not set reserved key(s): {', '.join(clash)}")
        tensors: dict[str, torch.Tensor] = {}
        for prefix, model in (("stage1", self.stage1), ("stage2", self.stage2)):
            if model is None:
                continue
            spec = getattr(model, "spec", None)
            if spec is None or not hasattr(spec, "to_dict"):
                raise UserError(
                    f"cannot bundle {prefix}: {type(model).__name__} has no ModelSpec "
                    "(only twostage RCAN/EDSR networks can be bundled; export to ONNX instead)"
                )
            meta[f"{prefix}_spec"] = json.dumps(spec.to_dict(), sort_keys=True)
            for key, value in model.state_dict().items():
                tensors[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()
        meta.update(
            format=BUNDLE_FORMAT,
            version=BUNDLE_VERSION,
            twostage_version=__version__,
            name=self.name,
            scale=str(self.scale),
            stage2_repeats=str(self.stage2_repeats),
            quantize_intermediate=json.dumps(self.quantize_intermediate),
            intermediate_bit_depth=str(self.intermediate_bit_depth),
        )
        if self.stage1 is not None:
            meta["strength"] = json.dumps(self.strength)
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)


def _scale_of(model: nn.Module) -> int:
    scale = getattr(model, "scale", None)
    if not isinstance(scale, int) or scale < 1:
        raise UserError(f"{type(model).__name__} has no integer .scale attribute")
    return scale


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"cannot read {path}: {exc}") from None


def is_bundle(path: str | Path) -> bool:
    """True for a `.safetensors` file whose metadata says it is a pipeline bundle."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    return _safetensors_metadata(path).get("format") == BUNDLE_FORMAT


@dataclass(frozen=True)
class BundleMeta:
    """The metadata a bundle is built from (`save_bundle` writes each value as JSON in a
    string; `name` and `scale` as plain text), filled by `parse`. Other keys (a branch's
    domain, degradation, ...) travel in the file and are not read here."""

    stage2_spec: ModelSpec
    stage2_repeats: int
    stage1_spec: ModelSpec | None = None
    quantize_intermediate: bool = True
    intermediate_bit_depth: int = 8
    name: str = ""
    scale: str | None = None  # checked against the stages' scale once they are built
    strength: float = 1.0  # the default blend (absent in bundles older than it: 1)


# The values a bundle's numeric fields may take (JSON; `"8"` is a string, out of range too).
_CHOICES: dict[str, tuple[Sequence[Any], str]] = {
    "stage2_repeats": (range(1, MAX_STAGE2_REPEATS + 1), f"1 to {MAX_STAGE2_REPEATS}"),
    "quantize_intermediate": ((True, False), "true or false"),
    "intermediate_bit_depth": ((8, 16), "8 or 16"),
}


def _decoded(key: str, raw: str, path: Path) -> Any:
    """Metadata value `raw` of `key` as BundleMeta takes it: JSON, or the text (name, scale)."""
    if key in ("name", "scale"):
        return raw
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deeply
        if key.endswith("_spec"):
            raise CheckpointError(f"{path}: broken pipeline bundle metadata ({exc})") from None
        value = raw
    allowed, shown = _CHOICES.get(key, (None, ""))
    if allowed is not None and (
        type(value) not in {type(a) for a in allowed} or value not in allowed
    ):
        raise CheckpointError(
            f"{path}: bundle metadata {key}={short(raw, quote=False)} is out of range "
            f"(expected {shown})"
        )
    return value


def _bundle_meta(meta: Mapping[str, str], path: Path) -> BundleMeta:
    """A bundle's `BundleMeta`, every field type- and range-checked; errors name the key."""
    if meta.get("version") != BUNDLE_VERSION:
        raise CheckpointError(
            f"{path}: pipeline bundle version {short(meta.get('version'))} is not supported "
            f"(this twostage reads version {BUNDLE_VERSION})"
        )
    data = {k: _decoded(k, meta[k], path) for k in field_names(BundleMeta) if k in meta}
    try:
        return parse(BundleMeta, data, str(path))
    except UserError as exc:
        raise CheckpointError(str(exc)) from None


def _load_bundle(path: Path, device: torch.device) -> Pipeline:
    """A bundle's pipeline; every metadata field is range-checked before anything is built, and
    the weights must be exactly what each stage's spec says (`model_from_state`)."""
    meta = _bundle_meta(_safetensors_metadata(path), path)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors' own error types for a corrupt body
        raise CheckpointError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    specs = {"stage1": meta.stage1_spec, "stage2": meta.stage2_spec}
    stages: dict[str, nn.Module] = {}
    for prefix, spec in specs.items():
        if spec is None:
            continue
        own = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        stages[prefix] = model_from_state(own, spec=spec, source=f"{path} ({prefix})")
    stray = sorted(k for k in state if k.split(".", 1)[0] not in stages)
    if stray:
        raise CheckpointError(f"{path}: unknown keys in pipeline bundle: {', '.join(stray)}")
    try:
        pipe = Pipeline(
            stages.get("stage1"),
            stages["stage2"],
            stage2_repeats=meta.stage2_repeats,
            name=meta.name,
            quantize_intermediate=meta.quantize_intermediate,
            intermediate_bit_depth=meta.intermediate_bit_depth,
            strength=meta.strength,
        )
    except UserError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if meta.scale is not None and meta.scale != str(pipe.scale):
        raise CheckpointError(
            f"{path}: bundle says scale {short(meta.scale)} but its stages give {pipe.scale}"
        )
    return pipe.to(device).eval()


def _pipeline_precision(pipe: Pipeline, requested: str, device: torch.device) -> Precision:
    """`resolve_precision`, except that `auto` keeps fp32 for a network that is not ours."""
    chosen = resolve_precision(requested, device)
    foreign = [type(m).__name__ for m in pipe.stages() if getattr(m, "spec", None) is None]
    if requested == "auto" and chosen.mode != "fp32" and foreign:
        return Precision("fp32", f"auto: {foreign[0]} may not keep its output layer in fp32")
    return chosen


def load_pipeline(
    path: str | Path, *, device: str | torch.device | None = "cpu", precision: str = "fp32"
) -> Pipeline | OnnxPipeline:
    """Load what `--model` names: a bundle, any checkpoint `load_model` reads, or an `.onnx`.

    A single checkpoint becomes `Pipeline(None, model)`. Nothing here executes code from the
    file (safetensors, `torch.load(weights_only=True)`, or an ONNX graph). `precision`: see
    the module docstring; an `.onnx` file runs in fp32 (auto or fp32 only).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        if precision not in ("auto", "fp32"):
            raise UserError(f"--precision {precision}: {path} is ONNX, which runs in fp32 here")
        return OnnxPipeline(path, device=device)
    dev = resolve_device(device)
    if is_bundle(path):
        pipe = _load_bundle(path, dev)
    else:
        from twostage.models.checkpoints import load_model

        pipe = Pipeline(None, load_model(path, device=dev), name=path.stem).to(dev).eval()
    pipe.precision = _pipeline_precision(pipe, precision, dev)
    # NHWC weights make every conv run NHWC (oneDNN and cuDNN): 1.1–1.4× faster inference
    # here, the same results up to float rounding (BENCHMARKS.md).
    return pipe.to(memory_format=torch.channels_last)


def with_stage2(pipe: Pipeline | OnnxPipeline, path: str | Path, *, precision: str) -> Pipeline:
    """`pipe` with its stage 2 replaced by the network in `path` (any checkpoint `load_model`
    reads, e.g. an official EDSR/RCAN ×2): the blind stage 1 in front of a bicubic network.
    The new network must have the old one's scale; precision is resolved anew for it."""
    path = Path(path)
    if not isinstance(pipe, Pipeline) or pipe.stage1 is None:
        raise UserError(
            f"--stage2 {path}: {pipe.name or 'the model'} has no stage 1 to put in front of it "
            "(give a two-stage bundle, or leave --model out for the shipped one)"
        )
    if not path.is_file():
        raise UserError(f"--stage2: model file not found: {path}")
    if is_bundle(path):
        raise UserError(f"--stage2 {path}: a pipeline bundle; give one network's checkpoint")
    from twostage.models.checkpoints import load_model

    dev = pipe.device()
    network = load_model(path, device=dev)
    old, new = _scale_of(pipe.stage2), _scale_of(network)
    if new != old:
        raise UserError(
            f"--stage2 {path}: a ×{new} network; the stage 2 it replaces is ×{old}, "
            f"so it must be ×{old}"
        )
    result = Pipeline(
        pipe.stage1,
        network,
        stage2_repeats=pipe.stage2_repeats,
        name=f"{pipe.name or 'pipeline'}+{path.stem}",
        quantize_intermediate=pipe.quantize_intermediate,
        intermediate_bit_depth=pipe.intermediate_bit_depth,
        strength=pipe.strength,
    )
    result.precision = _pipeline_precision(result, precision, dev)
    return result.to(dev).eval().to(memory_format=torch.channels_last)
