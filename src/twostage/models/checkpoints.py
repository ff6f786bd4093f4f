"""Checkpoint files: our native format, the official EDSR/RCAN and BasicSR layouts, spandrel.

Layouts (docs/design.md, "Conventions of the field"):
- **native**: `.safetensors` whose tensors use the official key names (our modules are laid
  out as the official code) and whose metadata is `{"format": "twostage", "version", "spec":
  JSON of ModelSpec}`;
- **official** EDSR-PyTorch / RCAN: a raw state dict (`head.0`, `body.…`, `tail.0.0`,
  `tail.1`, `sub_mean`, `add_mean`), usually a `.pt`;
- **BasicSR**: `{'params' | 'params_ema': state}` with `conv_first`, `body.{i}.conv1/conv2`
  (EDSR) or `body.{g}.residual_group.{b}.rcab.*` / `body.{g}.conv` (RCAN),
  `conv_after_body`, `upsample.*`, `conv_last`; the mean shift is fixed, not stored.

Architecture and hyper-parameters are detected from key names and tensor shapes; any missing,
unexpected or mis-shaped key is a `CheckpointError` listing them. Pickled files are read with
`torch.load(weights_only=True)` only, so loading never runs code. Other architectures load
through spandrel (an optional extra).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from twostage.errors import UserError
from twostage.models import ModelSpec, build_model
from twostage.models.common import DIV2K_RGB_MEAN, RGB_RANGE
from twostage.ops.files import atomic_path

FORMAT = "twostage"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
# Where a training checkpoint keeps its weights; BasicSR's EMA weights are preferred.
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net")
SPANDREL_HINT = "pip install torchvision spandrel==0.4.2"
MEAN_KEYS = ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias")


class CheckpointError(UserError):
    """A checkpoint file that cannot be read or does not match a supported layout."""


# ---------------------------------------------------------------------------------------------
# reading and writing files


def read_state(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The flat state dict and metadata of a checkpoint file, on the CPU.

    `.safetensors` keep their metadata; `.pt/.pth/.ckpt/.bin` are read with
    `torch.load(weights_only=True)` (anything but tensors and plain containers is refused, so
    a malicious pickle cannot run code) and give empty metadata. Wrappers such as
    `{'params_ema': …}` are unwrapped and `module.` prefixes stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"cannot read checkpoint {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                raw: Any = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read checkpoint {path}: {_one_line(e)}") from None
    elif suffix in PICKLE_SUFFIXES:
        metadata = {}
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            culprit = f" (it refers to {found.group(1)})" if found else ""
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects other than tensors, and "
                f"unpickling them could run code{culprit}"
            ) from None
        except Exception as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {_one_line(e)}") from None
    else:
        raise CheckpointError(
            f"cannot read checkpoint {path}: unknown file type {suffix or '(none)'}; expected "
            f".safetensors or {', '.join(PICKLE_SUFFIXES)}"
        )
    return _unwrap(raw, str(path)), metadata


def _unwrap(raw: Any, source: str) -> dict[str, Tensor]:
    """Find the state dict inside a loaded checkpoint object and strip `module.`."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {type(raw).__name__}")
    state: Any = raw
    if not all(isinstance(v, Tensor) for v in raw.values()):
        inner = [k for k in WRAPPER_KEYS if isinstance(raw.get(k), Mapping)]
        if inner:
            state = raw[inner[0]]
        elif len(raw) == 1 and isinstance(next(iter(raw.values())), Mapping):
            state = next(iter(raw.values()))
        else:
            raise CheckpointError(
                f"{source}: no state dict found (top-level keys: {_key_list(map(str, raw))})"
            )
    if not state:
        raise CheckpointError(f"{source}: the state dict is empty")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source}: entries that are not tensors: {_key_list(not_tensors)}")
    return {_strip_module(str(k)): v for k, v in state.items()}


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def save_model(
    path: str | os.PathLike, model: nn.Module, *, metadata: dict[str, str] | None = None
) -> None:
    """Write `model` (RCAN/EDSR) as a native `.safetensors` with its spec, atomically."""
    from safetensors.torch import save_file

    from twostage import __version__

    spec = _spec_of(model)
    meta = dict(metadata or {})
    clash = sorted(set(meta) & {"format", "version", "spec"})
    if clash:
        raise ValueError(f"save_model: metadata may not set {', '.join(clash)}")
    meta.update(format=FORMAT, version=__version__, spec=json.dumps(spec.to_dict()))
    with atomic_path(path) as tmp:
        save_file(to_official(model), str(tmp), metadata=meta)


def save_official(path: str | os.PathLike, model: nn.Module) -> None:
    """Write `model` as a raw official EDSR-PyTorch/RCAN state dict (`torch.save`), so that
    the official code, spandrel and other tools load it."""
    state = to_official(model)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_basicsr(path: str | os.PathLike, model: nn.Module, *, key: str = "params") -> None:
    """Write `model` as a BasicSR checkpoint `{key: state}` (`torch.save`)."""
    state = to_basicsr(model, key=key)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


# ---------------------------------------------------------------------------------------------
# layouts


def to_official(model: nn.Module) -> dict[str, Tensor]:
    """The official-layout state dict of our RCAN/EDSR (CPU, contiguous tensors)."""
    model = _inner(model)
    _spec_of(model)
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def from_official(state: Mapping[str, Tensor], *, spec: ModelSpec | None = None) -> nn.Module:
    """Build RCAN/EDSR from an official-layout state dict (spec detected unless given)."""
    if _layout(state) == "basicsr":
        raise CheckpointError("from_official: this is a BasicSR state dict; use from_basicsr")
    return model_from_state(state, spec=spec)


def to_basicsr(model: nn.Module, *, key: str = "params") -> dict[str, dict[str, Tensor]]:
    """`{key: state}` in BasicSR's EDSR/RCAN layout. BasicSR's mean shift is fixed to DIV2K's
    mean on [0, 255], so a model whose mean shift differs cannot be expressed and is refused."""
    spec = _spec_of(model)
    official = to_official(model)
    _check_default_mean(official, "to_basicsr")
    names = _basicsr_names(spec)
    return {key: {names[k]: v for k, v in official.items() if k not in MEAN_KEYS}}


def from_basicsr(checkpoint: Mapping[str, Any], *, spec: ModelSpec | None = None) -> nn.Module:
    """Build RCAN/EDSR from a BasicSR checkpoint (`{'params'|'params_ema': …}` or flat)."""
    state = _unwrap(checkpoint, "BasicSR checkpoint")
    if _layout(state) != "basicsr":
        raise CheckpointError(
            f"from_basicsr: not a BasicSR EDSR/RCAN state dict (keys: {_key_list(state)})"
        )
    return model_from_state(state, spec=spec)


def _basicsr_names(spec: ModelSpec) -> dict[str, str]:
    """Official key → BasicSR key, for every non-mean-shift tensor of `spec`'s network."""
    groups, blocks = spec.n_resgroups, spec.n_resblocks
    rules: list[tuple[str, str]] = [
        (r"head\.0\.", "conv_first."),
        (r"tail\.0\.(\d+)\.", r"upsample.\1."),
        (r"tail\.1\.", "conv_last."),
    ]
    if spec.arch == "rcan":
        rules += [
            (r"body\.(\d+)\.body\.(\d+)\.body\.([02])\.", r"body.\1.residual_group.\2.rcab.\3."),
            (
                r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.0\.",
                r"body.\1.residual_group.\2.rcab.3.attention.1.",
            ),
            (
                r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.2\.",
                r"body.\1.residual_group.\2.rcab.3.attention.3.",
            ),
            (rf"body\.(\d+)\.body\.{blocks}\.", r"body.\1.conv."),
            (rf"body\.{groups}\.", "conv_after_body."),
        ]
    else:
        rules += [
            (r"body\.(\d+)\.body\.0\.", r"body.\1.conv1."),
            (r"body\.(\d+)\.body\.2\.", r"body.\1.conv2."),
            (rf"body\.{blocks}\.", "conv_after_body."),
        ]
    names: dict[str, str] = {}
    for key in _expected_shapes(spec):
        if key in MEAN_KEYS:
            continue
        for pattern, repl in rules:
            new, n = re.subn("^" + pattern, repl, key)
            if n:
                names[key] = new
                break
        else:  # pragma: no cover - every key of our own modules has a rule
            raise AssertionError(f"no BasicSR name for {key}")
    return names


def _layout(state: Mapping[str, Any]) -> str | None:
    """'official', 'basicsr' or None (not an EDSR/RCAN state dict we know)."""
    keys = state.keys()
    if {"head.0.weight", "tail.1.weight"} <= keys and (
        "body.0.body.0.body.3.conv_du.0.weight" in keys or "body.0.body.0.weight" in keys
    ):
        return "official"
    if {"conv_first.weight", "conv_after_body.weight", "conv_last.weight"} <= keys and (
        "body.0.residual_group.0.rcab.0.weight" in keys or "body.0.conv1.weight" in keys
    ):
        return "basicsr"
    return None


# ---------------------------------------------------------------------------------------------
# detection and strict loading


def detect_spec(state: Mapping[str, Tensor]) -> ModelSpec:
    """Architecture, depth, width, reduction and scale of an official, native or BasicSR
    EDSR/RCAN state dict, read from its key names and tensor shapes.

    EDSR's `res_scale` is not in the weights: 1.0, except 0.1 for the 32×256 EDSR that
    EDSR-PyTorch publishes. Native files carry their full spec in the metadata instead.
    """
    state = {_strip_module(k): v for k, v in state.items()}
    layout = _layout(state)
    if layout is None:
        raise CheckpointError(
            "not an EDSR/RCAN state dict: expected official (head.0, body.…, tail.1) or "
            f"BasicSR (conv_first, body.…, conv_last) keys, found {_key_list(state)}"
        )
    try:
        if layout == "official":
            first, upsample = "head.0.weight", "tail.0"
            rcan = "body.0.body.0.body.3.conv_du.0.weight" in state
            groups = _run_length(state, "body.{}.body.0.body.0.weight") if rcan else 0
            blocks = (
                _run_length(state, "body.0.body.{}.body.0.weight")
                if rcan
                else _run_length(state, "body.{}.body.0.weight")
            )
            squeeze = "body.0.body.0.body.3.conv_du.0.weight"
        else:
            first, upsample = "conv_first.weight", "upsample"
            rcan = "body.0.residual_group.0.rcab.0.weight" in state
            groups = _run_length(state, "body.{}.conv.weight") if rcan else 0
            blocks = (
                _run_length(state, "body.0.residual_group.{}.rcab.0.weight")
                if rcan
                else _run_length(state, "body.{}.conv1.weight")
            )
            squeeze = "body.0.residual_group.0.rcab.3.attention.1.weight"
        n_feats, *rest = _conv_shape(state, first)
        if tuple(rest) != (3, 3, 3):
            raise CheckpointError(
                f"{first} has shape {tuple(state[first].shape)}; only RGB "
                "networks with 3×3 convolutions are supported"
            )
        reduction = n_feats // _conv_shape(state, squeeze)[0] if rcan else 16
        scale = _upsample_scale(state, upsample)
    except KeyError as e:
        raise CheckpointError(f"incomplete {layout} state dict: missing {e}") from None
    if rcan:
        return ModelSpec(
            arch="rcan",
            scale=scale,
            n_feats=n_feats,
            n_resblocks=blocks,
            n_resgroups=groups,
            reduction=reduction,
        )
    res_scale = 0.1 if (blocks, n_feats) == (32, 256) else 1.0
    return ModelSpec(
        arch="edsr", scale=scale, n_feats=n_feats, n_resblocks=blocks, res_scale=res_scale
    )


def _run_length(state: Mapping[str, Any], pattern: str) -> int:
    """How many of pattern.format(0), pattern.format(1), … are keys, counting from 0."""
    n = 0
    while pattern.format(n) in state:
        n += 1
    return n


def _conv_shape(state: Mapping[str, Tensor], key: str) -> tuple[int, int, int, int]:
    """The shape of convolution weight `key` (KeyError when missing); any other rank, or a
    zero-size dimension, is a CheckpointError naming the key."""
    shape = tuple(int(n) for n in state[key].shape)
    if len(shape) != 4 or 0 in shape:
        raise CheckpointError(f"{key} has shape {shape}: not a convolution weight")
    return shape  # type: ignore[return-value]


def _upsample_scale(state: Mapping[str, Tensor], prefix: str) -> int:
    """Scale of a pixel-shuffle upsampler `prefix.{0,2,4…}` (1 when there is none)."""
    scale, i = 1, 0
    while f"{prefix}.{i}.weight" in state:
        out_ch, in_ch = _conv_shape(state, f"{prefix}.{i}.weight")[:2]
        step = math.isqrt(out_ch // in_ch)
        if out_ch != step * step * in_ch or step not in (2, 3):
            raise CheckpointError(
                f"{prefix}.{i}.weight has shape "
                f"{tuple(state[f'{prefix}.{i}.weight'].shape)}: not a ×2/×3 "
                "pixel-shuffle upsampler"
            )
        scale *= step
        i += 2
    return scale


def model_from_state(
    state: Mapping[str, Tensor], *, spec: ModelSpec | None = None, source: str = "state dict"
) -> nn.Module:
    """RCAN/EDSR with exactly these weights (official or BasicSR layout, `module.` stripped).

    `spec` is detected unless given. Missing, unexpected and mis-shaped keys raise a
    `CheckpointError` that lists them; nothing is skipped.
    """
    state = {_strip_module(k): v for k, v in state.items()}
    check_weights(state, source)
    try:
        detected = detect_spec(state)
    except UserError as e:
        raise CheckpointError(f"{source}: {e}") from None
    if spec is not None and _structure(spec) != _structure(detected):
        raise CheckpointError(
            f"{source}: the weights are {_what(detected)}, but {_what(spec)} was expected"
        )
    spec = spec or detected
    if _layout(state) == "basicsr":
        official_of = {b: o for o, b in _basicsr_names(spec).items()}
        _check_keys(
            set(state),
            set(official_of),
            source,
            f"BasicSR {spec.arch} ({spec.describe()}, ×{spec.scale})",
        )
        state = {**{official_of[k]: v for k, v in state.items()}, **_default_mean_shift()}
    expected = _expected_shapes(spec)
    what = f"{spec.arch} ({spec.describe()}, ×{spec.scale})"
    _check_keys(set(state), set(expected), source, what)
    wrong = [
        f"{k} {tuple(state[k].shape)}≠{expected[k]}"
        for k in expected
        if tuple(state[k].shape) != expected[k]
    ]
    if wrong:
        raise CheckpointError(f"{source}: wrong shapes for {what}: {_key_list(wrong)}")
    if float(state["sub_mean.bias"].abs().max()) < 2.0:
        raise CheckpointError(
            f"{source}: its mean shift works on [0, 1] (rgb_range 1); only "
            "networks trained on the official [0, 255] range are supported"
        )
    model = build_model(spec)
    model.load_state_dict(state, strict=True)
    return model


def _structure(spec: ModelSpec) -> tuple[object, ...]:
    """The fields of a spec that the weights determine (all but EDSR's res_scale)."""
    reduction = spec.reduction if spec.arch == "rcan" else None
    return (spec.arch, spec.scale, spec.n_feats, spec.n_resblocks, spec.n_resgroups, reduction)


def _what(spec: ModelSpec) -> str:
    return f"{spec.arch.upper()} ×{spec.scale} ({spec.describe()})"


def check_weights(state: Mapping[str, Tensor], source: str) -> None:
    """Refuse tensors no RCAN/EDSR weight can be: not floating point (bool, int, complex),
    empty, or holding NaN or Inf."""
    not_float = [f"{k} ({v.dtype})" for k, v in state.items() if not v.is_floating_point()]
    if not_float:
        raise CheckpointError(f"{source}: weights must be floats, found {_key_list(not_float)}")
    empty = [f"{k} {tuple(v.shape)}" for k, v in state.items() if v.numel() == 0]
    if empty:
        raise CheckpointError(f"{source}: empty weight tensors {_key_list(empty)}")
    check_finite(state, source)


def check_finite(state: Mapping[str, Tensor], source: str) -> None:
    """Refuse weights holding NaN or Inf: they only ever give black or garbage images."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(f"{source}: NaN or Inf in the weights of {_key_list(bad)}")


def load_weights(model: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    """Copy an official/BasicSR/native `state` into our RCAN/EDSR `model` (e.g. `model.init`);
    another architecture or size is a CheckpointError saying what the weights are."""
    fitted = model_from_state(state, spec=_spec_of(model), source=source)
    _inner(model).load_state_dict(fitted.state_dict())


def _check_keys(found: set[str], expected: set[str], source: str, what: str) -> None:
    """Raise a CheckpointError listing missing and unexpected keys, if any."""
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    parts = [
        f"{label} keys {_key_list(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    if parts:
        raise CheckpointError(f"{source}: does not match {what}: {'; '.join(parts)}")


def _default_mean_shift() -> dict[str, Tensor]:
    """The DIV2K mean shift tensors (official layout) that BasicSR files leave implicit."""
    mean = torch.tensor(DIV2K_RGB_MEAN)
    eye = torch.eye(3).view(3, 3, 1, 1)
    return {
        "sub_mean.weight": eye,
        "sub_mean.bias": -RGB_RANGE * mean,
        "add_mean.weight": eye.clone(),
        "add_mean.bias": RGB_RANGE * mean,
    }


def _expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build_model(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_default_mean(state: Mapping[str, Tensor], what: str) -> None:
    for key, value in _default_mean_shift().items():
        if not torch.allclose(state[key].float(), value, rtol=0, atol=1e-4):
            raise CheckpointError(
                f"{what}: {key} differs from BasicSR's fixed DIV2K mean "
                "shift; save in the official or native layout instead"
            )


def _inner(model: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel (`.module`) or torch.compile (`._orig_mod`)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _spec_of(model: nn.Module) -> ModelSpec:
    spec = getattr(_inner(model), "spec", None)
    if not isinstance(spec, ModelSpec):
        raise CheckpointError(
            f"{type(model).__name__} is not one of our RCAN/EDSR models; "
            "only those can be saved in these layouts"
        )
    return spec


# ---------------------------------------------------------------------------------------------
# loading any file


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Any supported checkpoint as a model in eval mode on `device`, taking and returning
    N×3×H×W floats in [0, 1], with `.scale` (and `.spec`, None for spandrel models).

    Native files are rebuilt from their metadata; official and BasicSR EDSR/RCAN from their
    keys; anything else goes to spandrel (optional: `pip install torchvision spandrel`).
    """
    path = Path(path)
    state, metadata = read_state(path)
    if metadata.get("format") == FORMAT and "spec" in metadata:
        try:
            spec: ModelSpec | None = ModelSpec.from_dict(json.loads(metadata["spec"]))
        except (ValueError, TypeError, RecursionError, UserError) as e:
            raise CheckpointError(f"{path}: bad model spec in metadata: {e}") from None
        model = model_from_state(state, spec=spec, source=str(path))
    elif _layout(state) is not None:
        model = model_from_state(state, source=str(path))
    else:
        model = _load_with_spandrel(state, path)
    return model.to(device).eval()


class SpandrelModel(nn.Module):
    """A network spandrel recognised, behind our interface: [0, 1] N×3×H×W in and out, with
    `.scale`. `.net` is spandrel's module (its `state_dict()` keys are `net.…`)."""

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        self.net: nn.Module = descriptor.model
        self.scale = int(descriptor.scale)
        self.spec = None
        self.architecture = str(descriptor.architecture.id)
        self._descriptor = descriptor  # pads to the size the architecture needs, then crops

    def forward(self, x: Tensor) -> Tensor:
        return self._descriptor(x)


def _load_with_spandrel(state: dict[str, Tensor], path: Path) -> nn.Module:
    try:
        import spandrel
    except ImportError as e:  # spandrel 0.4.2's registry imports torchvision
        missing = (e.name or "spandrel").split(".")[0]
        need = (
            f"spandrel ({SPANDREL_HINT})"
            if missing == "spandrel"
            else f"spandrel, which is installed but cannot import {missing} (pip install {missing})"
        )
        raise UserError(
            f"cannot load {path}: not an EDSR/RCAN checkpoint, and other architectures need {need}"
        ) from None
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise CheckpointError(
            f"cannot load {path}: unknown architecture (keys: {_key_list(state)})"
        ) from None
    except Exception as e:  # a recognised architecture whose weights do not fit
        raise CheckpointError(f"cannot load {path} with spandrel: {_one_line(e)}") from None
    check_finite(state, str(path))
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise CheckpointError(
            f"{path}: spandrel loads it as {type(descriptor).__name__}, not an image-to-image model"
        )
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise CheckpointError(
            f"{path}: {descriptor.architecture.id} has "
            f"{descriptor.input_channels}→{descriptor.output_channels} "
            "channels; only RGB→RGB models are supported"
        )
    return SpandrelModel(descriptor)


# ---------------------------------------------------------------------------------------------
# messages


def _key_list(keys: Any, limit: int = 12) -> str:
    keys = [str(k) for k in keys]
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
