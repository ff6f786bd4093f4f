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

**Tiling.** `restore(img, tile=T, tile_pad=P)` cuts the input into T×T tiles, runs each tile
with P pixels of real image context on every side (less at the image border, where the network
sees the same zero padding as on the whole image), crops the context away from the output
(P × scale pixels) and pastes the core into an output buffer allocated once. With P at least
the network's receptive-field radius, tiled and whole-image results agree up to float rounding
and RCAN's channel attention, whose global average pool sees only the tile (≥ 50 dB, tested).

**`tile="auto"`** (rule in `auto_tile`): activation memory per input pixel is estimated from
each stage's width F and scale s as 8·F floats for the body (about six F-channel maps live at
once in a residual block, plus slack) and 2·F·s² floats for the pixel-shuffle upsampler (its
conv output and the shuffled copy at output size), times the number of pixels that stage sees
per input pixel; the tile is the largest square (plus its pad) that fits in half of the free
memory (psutil's available memory on CPU, capped at 1 GiB since bigger tiles are not faster
there; `torch.cuda.mem_get_info` on GPU). An image that fits whole is not tiled. Measured on
CPU, the estimate is within ±25 % of the peak RSS growth of rcan-paper/edsr-paper tiles of
96–256 pixels; the factor 2 of head-room covers the rest.

**Precision** (`models.inference`): `load_pipeline(..., precision="auto"|"fp32"|"bf32"|"bf16")`
resolves the mode for the load device and keeps it in `pipe.precision` (default fp32, so
tables stay reproducible across machines); `restore(precision=...)` overrides it for one call.
`auto` picks fp32 when a stage is not a twostage network: only ours keep their last conv in fp32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psutil
import torch
from safetensors.torch import load_file
from torch import nn

from twostage import __version__
from twostage.errors import UserError, short
from twostage.limits import MAX_SCALE, MAX_STAGE2_REPEATS, MIN_TILE
from twostage.models import ModelSpec
from twostage.models.checkpoints import CheckpointError, model_from_state
from twostage.models.inference import (
    Precision,
    precision_context,
    resolve_device,
    resolve_precision,
)
from twostage.ops.files import atomic_path
from twostage.ops.imageio import quantize, to_uint8, to_uint16
from twostage.ops.progress import bar

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "OnnxPipeline",
    "Pipeline",
    "auto_tile",
    "is_bundle",
    "load_pipeline",
    "resolve_device",
    "restore_image",
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
)
CPU_TILE_BUDGET = 1 << 30  # bytes; larger CPU tiles only cost memory
DEFAULT_WIDTH = 64  # feature channels assumed for a network whose width cannot be read

Tile = int | Literal["auto"] | None
Runner = Callable[[np.ndarray], np.ndarray]  # 1×3×h×w float32 → 1×3×(h·s)×(w·s) float32


def stage_width(model: nn.Module) -> int:
    """Feature channels of a network: `spec.n_feats`, else the widest conv input."""
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "n_feats"):
        return int(spec.n_feats)
    widths = [m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return max(widths, default=DEFAULT_WIDTH)


def activation_floats_per_pixel(stages: list[tuple[int, int]]) -> float:
    """Peak float32 values held per *input* pixel by networks (width F, scale s) run in turn.

    See the module docstring: 8·F + 2·F·s² per pixel a stage sees, the max over stages, plus
    the tile's input and output (3 + 3·S² for total scale S).
    """
    pixels = 1.0  # pixels seen by the current stage per input pixel
    peak = 0.0
    for width, scale in stages:
        peak = max(peak, pixels * (8 * width + 2 * width * scale * scale))
        pixels *= scale * scale
    return peak + 3.0 * (1.0 + pixels)


def free_memory(device: torch.device) -> int:
    """Bytes a tile may use: half the free GPU memory, or half of available RAM (≤ 1 GiB)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 2
    return min(psutil.virtual_memory().available // 2, CPU_TILE_BUDGET)


def auto_tile(
    height: int, width: int, *, floats_per_pixel: float, tile_pad: int, budget: int
) -> int | None:
    """The largest tile (a multiple of 8, at least 16) whose padded square fits `budget` bytes.

    None when the whole image fits at once (no tiling needed). A pad that leaves no room for
    a 16-pixel tile in a budget that holds one is an error naming --tile-pad.
    """
    bytes_per_pixel = 4.0 * floats_per_pixel
    if height * width * bytes_per_pixel <= budget:
        return None
    pad = _tile_pad(tile_pad, height, width)
    fits = int(math.sqrt(budget / bytes_per_pixel))
    if fits - 2 * pad < 16 <= fits:
        raise UserError(
            f"--tile-pad {tile_pad}: a tile with that much context needs more than the "
            f"{budget / 2**20:.0f} MiB of free memory it may use; lower --tile-pad "
            f"(at most {max(0, (fits - 16) // 2)} here)"
        )
    tile = max(16, (fits - 2 * pad) // 8 * 8)
    return None if tile >= max(height, width) else tile


def _tiles(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Core regions (y0, y1, x0, x1) covering the image, row by row."""
    return [
        (y0, min(y0 + tile, height), x0, min(x0 + tile, width))
        for y0 in range(0, height, tile)
        for x0 in range(0, width, tile)
    ]


def restore_image(
    run: Runner,
    img: np.ndarray,
    *,
    scale: int,
    tile: int | None,
    tile_pad: int,
    progress: bool = False,
    dtype: type = np.float32,
) -> np.ndarray:
    """Run `run` over a float image H×W×3, whole or tile by tile; returns (H·s)×(W·s)×3 float32
    in [0, 1], or, for `dtype` uint8 or uint16, each tile quantised as `write_image` would.

    The output buffer is allocated once; each tile's padded input and output are freed before
    the next, so peak memory is the input, the output buffer and one tile's activations. A tile
    pad larger than the image is the whole image (`_tile_pad`).
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"expected an H×W×3 image, got shape {img.shape}")
    if tile is not None and tile < MIN_TILE:
        raise UserError(f"--tile must be 'auto' or at least {MIN_TILE}, got {tile}")
    height, width = img.shape[:2]
    tile_pad = _tile_pad(tile_pad, height, width)
    if tile_pad == max(height, width):
        tile = None  # every tile would run the whole image: run it once
    quantise = {np.uint8: to_uint8, np.uint16: to_uint16}.get(dtype)
    img = np.ascontiguousarray(img, dtype=np.float32)
    out = np.empty((height * scale, width * scale, 3), dtype=dtype)
    regions = _tiles(height, width, tile) if tile else [(0, height, 0, width)]
    tiles = bar(regions, quiet=not progress or len(regions) == 1, desc="tiles", leave=False)
    for y0, y1, x0, x1 in tiles:
        py0, py1 = max(0, y0 - tile_pad), min(height, y1 + tile_pad)
        px0, px1 = max(0, x0 - tile_pad), min(width, x1 + tile_pad)
        patch = img[py0:py1, px0:px1].transpose(2, 0, 1)[None]
        result = run(np.ascontiguousarray(patch))
        expected = (1, 3, (py1 - py0) * scale, (px1 - px0) * scale)
        if result.shape != expected:
            raise UserError(
                f"the model returned shape {tuple(result.shape)} for an input of "
                f"{(1, 3, py1 - py0, px1 - px0)}; expected {expected} (scale {scale})"
            )
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        core = result[0, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale]
        if not np.isfinite(core).all():
            raise UserError(
                "the model produced NaN or Inf (broken or diverged weights); nothing written"
            )
        core = core.transpose(1, 2, 0)
        out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = quantise(core) if quantise else core
    if quantise is None:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _tile_pad(tile_pad: int, height: int, width: int) -> int:
    """`tile_pad` checked and clamped to the image's longer side: context past the image's
    edges does not exist, so a larger pad is the same as the whole image."""
    if not isinstance(tile_pad, int | np.integer) or isinstance(tile_pad, bool) or tile_pad < 0:
        raise UserError(f"--tile-pad must be an integer >= 0, got {short(tile_pad)}")
    return min(int(tile_pad), max(height, width))


class Pipeline(nn.Module):
    """Stage 1 (mapping, scale 1 or 2, or None) then stage 2 applied `stage2_repeats` times.

    Takes and returns N×3×H×W float tensors in [0, 1]; the output is clamped to [0, 1], the
    intermediate is clamped and (by default) rounded like an image on disk (module docstring).
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
        self.stage1 = stage1
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stage1 is not None:
            x = self._intermediate(self.stage1(x))
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
    ) -> np.ndarray:
        """Restore one float image H×W×3 of any size → (H·s)×(W·s)×3 float32 in [0, 1].

        `device`: where to run (moves the pipeline there); None keeps its current device.
        `precision`: auto, fp32, bf32 or bf16 for this call; None keeps `self.precision`.
        `dtype` uint8 or uint16: the output quantised tile by tile (`restore_image`).
        """
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
                y = self(torch.from_numpy(patch).to(dev))
            return y.float().cpu().numpy()

        return restore_image(
            run, img, scale=self.scale, tile=tile, tile_pad=tile_pad, progress=progress, dtype=dtype
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


def _load_bundle(path: Path, device: torch.device) -> Pipeline:
    """A bundle's pipeline; every metadata field is range-checked before anything is built, and
    the weights must be exactly what each stage's spec says (`model_from_state`)."""
    meta = _safetensors_metadata(path)
    if meta.get("version") != BUNDLE_VERSION:
        raise CheckpointError(
            f"{path}: pipeline bundle version {short(meta.get('version'))} is not supported "
            f"(this twostage reads version {BUNDLE_VERSION})"
        )
    repeats = _meta_field(meta, "stage2_repeats", range(1, MAX_STAGE2_REPEATS + 1), path)
    quant = _meta_field(meta, "quantize_intermediate", (True, False), path, default="true")
    bits = _meta_field(meta, "intermediate_bit_depth", (8, 16), path, default="8")
    try:
        specs = {
            p: ModelSpec.from_dict(json.loads(meta[f"{p}_spec"]))
            for p in ("stage1", "stage2")
            if f"{p}_spec" in meta
        }
        state = load_file(str(path))
    except (ValueError, TypeError, AttributeError, UserError) as exc:
        raise CheckpointError(f"{path}: broken pipeline bundle metadata ({exc})") from None
    except Exception as exc:  # safetensors' own error types for a corrupt body
        raise CheckpointError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if "stage2" not in specs:
        raise CheckpointError(f"{path}: pipeline bundle has no stage2_spec")
    stages: dict[str, nn.Module] = {}
    for prefix, spec in specs.items():
        own = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        stages[prefix] = model_from_state(own, spec=spec, source=f"{path} ({prefix})")
    stray = sorted(k for k in state if k.split(".", 1)[0] not in stages)
    if stray:
        raise CheckpointError(f"{path}: unknown keys in pipeline bundle: {', '.join(stray)}")
    try:
        pipe = Pipeline(
            stages.get("stage1"),
            stages["stage2"],
            stage2_repeats=repeats,
            name=meta.get("name", ""),
            quantize_intermediate=quant,
            intermediate_bit_depth=bits,
        )
    except UserError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if str(pipe.scale) != meta.get("scale", str(pipe.scale)):
        raise CheckpointError(
            f"{path}: bundle says scale {short(meta['scale'])} but its stages give {pipe.scale}"
        )
    return pipe.to(device).eval()


def _meta_field(
    meta: Mapping[str, str],
    key: str,
    allowed: Sequence[Any],
    path: Path,
    default: str | None = None,
) -> Any:
    """Bundle metadata field `key` as JSON, which must be one of `allowed`; errors name it."""
    raw = meta.get(key, default)
    if raw is None:
        raise CheckpointError(f"{path}: pipeline bundle metadata has no {key}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if type(value) not in {type(a) for a in allowed} or value not in allowed:
        shown = " or ".join(map(json.dumps, allowed))
        if isinstance(allowed, range):
            shown = f"{allowed[0]} to {allowed[-1]}"
        raise CheckpointError(
            f"{path}: bundle metadata {key}={short(raw, quote=False)} is out of range "
            f"(expected {shown})"
        )
    return value


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
    ) -> np.ndarray:
        """As `Pipeline.restore`; `device` must match the one given at load (or be None)."""
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
            self._run,
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
