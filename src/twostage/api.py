"""The public Python API: load and restore, degrade, score, run a recipe, train a network.

This is the stable surface (docs/api.md): its names and signatures are pinned by
tests/test_api.py. Each function is the one the command line runs: `twostage run` and
`twostage train` call `run` and `train_network`; `twostage restore` loads through the same
`restore.open_model` as `load` and runs the same `Pipeline.restore`; `twostage degrade` and
`twostage evaluate` run `ops.degrade.degrade` and `evaluate.evaluate_arrays` on each file, as
`degrade` and `score` do on arrays. Bad input raises the CLI's `UserError`, never prints.

Importing this module imports neither numpy nor torch: each function imports what it needs
when called. `import twostage` does not import this module until one of its names is used.
`evaluate` and `train` are not facade names because `twostage.evaluate` and `twostage.train`
are modules: importing them would rebind the package attribute.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from twostage.errors import UserError, short
from twostage.limits import MAX_OUTPUT_PIXELS, MAX_PIXELS, MIN_TILE

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from twostage.config import TrainConfig
    from twostage.recipes import Recipe
    from twostage.train import TrainResult

    ImageLike = np.ndarray | Image.Image

__all__ = [
    "Mean",
    "Model",
    "RunResults",
    "Scores",
    "degrade",
    "load",
    "run",
    "score",
    "train_network",
]


# ----------------------------------------------------------------------------- images


def _pil_image(image: object) -> bool:
    """True for a PIL image, without importing PIL (no PIL image exists before it is imported)."""
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(image, pil.Image)


def _pixels(image: object, what: str) -> tuple[np.ndarray, str]:
    """`image` as float32 RGB H×W×3 in [0, 1] (as `read_image` gives a file's pixels) and its
    kind: "pil", "uint8", "uint16" or the float dtype's name."""
    from twostage.ops.imageio import to_float

    array, kind = _checked(image, what)
    return to_float(array), kind


def _checked(image: object, what: str) -> tuple[np.ndarray, str]:
    """`image` as a numpy array H×W×3 of uint8, uint16 or float in [0, 1], not converted, and
    its kind; anything else is a UserError naming what is wrong."""
    import numpy as np

    kind = "pil" if _pil_image(image) else ""
    if kind:
        if image.mode != "RGB":  # type: ignore[attr-defined]
            raise UserError(
                f"{what}: a PIL image in mode {image.mode!r}; convert it first: "  # type: ignore[attr-defined]
                "image.convert('RGB')"
            )
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        got = type(image).__name__
        raise UserError(f"{what}: expected a numpy array or a PIL image, got {got}")
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise UserError(f"{what}: expected an H×W×3 RGB image, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16) and not np.issubdtype(image.dtype, np.floating):
        raise UserError(
            f"{what}: {image.dtype.name} samples have no defined white level "
            "(uint8, uint16 or float in [0, 1])"
        )
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise UserError(f"{what}: holds NaN or Inf values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise UserError(f"{what}: float values span [{low:g}, {high:g}], not [0, 1]")
    return image, kind or image.dtype.name


def _output_dtype(kind: str) -> type:
    import numpy as np

    return {"pil": np.uint8, "uint8": np.uint8, "uint16": np.uint16}.get(kind, np.float32)


def _as_kind(result: np.ndarray, kind: str) -> ImageLike:
    """A restored array (uint8, uint16 or float32) back as the kind the caller gave."""
    if kind == "pil":
        from PIL import Image

        return Image.fromarray(result)
    if kind in ("uint8", "uint16"):
        return result
    return result.astype(kind, copy=False)


def _integer(value: object) -> int | None:
    """`value` as an int if it is an integer (numpy's too), else None; a bool is not one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _non_negative_int(value: object, what: str) -> int:
    number = _integer(value)
    if number is None or number < 0:
        raise UserError(f"{what} must be an integer >= 0, got {short(value)}")
    return number


# ----------------------------------------------------------------------------- restore


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded model or pipeline (`load`): its name, total scale, precision mode, device and
    default strength."""

    name: str
    scale: int
    precision: str  # fp32, bf32 or bf16: what `restore` runs in
    device: str
    strength: float  # what `restore(strength=None)` blends at (1: stage 1 alone, or no stage 1)
    _pipeline: Any = field(repr=False)

    def restore(
        self,
        image: ImageLike,
        *,
        tile: int | Literal["auto"] | None = "auto",
        tile_pad: int = 16,
        strength: float | None = None,
        tta: bool = False,
    ) -> ImageLike:
        """Restore one RGB image H×W×3 → (H·s)×(W·s)×3, as `twostage restore` does.

        numpy uint8 or uint16 in → the same out (rounded as the CLI writes it); float in [0, 1]
        → that float dtype; a PIL RGB image → a PIL image. `tile`: "auto" (fits free memory),
        None (whole image) or the tile's side in input pixels (`--tile`). `strength`: 0 to 1,
        the blend of stage 1 with bicubic (`--strength`); None: the model's default. `tta`:
        average over the 8 flips and rotations (`--tta`, 8× the time).
        """
        self._pipeline.resolve_strength(strength)
        if not isinstance(tta, bool):
            raise UserError(f"tta must be True or False, got {short(tta)}")
        if tile not in ("auto", None):
            if (_integer(tile) or 0) < MIN_TILE:
                raise UserError(
                    f"tile must be 'auto', None or an integer >= {MIN_TILE}, got {short(tile)}"
                )
            tile = _integer(tile)
        array, kind = _checked(image, "restore")
        height, width = array.shape[0] * self.scale, array.shape[1] * self.scale
        if height * width > MAX_OUTPUT_PIXELS:  # checked before anything is allocated
            raise UserError(
                f"restore: the ×{self.scale} output would be {width}×{height} "
                f"({height * width / 1e6:g} MP), over the limit of {MAX_OUTPUT_PIXELS / 1e6:g} MP"
            )
        from twostage.ops.imageio import to_float

        result = self._pipeline.restore(
            to_float(array),
            tile=tile,
            tile_pad=tile_pad,
            dtype=_output_dtype(kind),
            strength=strength,
            tta=tta,
        )
        return _as_kind(result, kind)


def load(
    name_or_path: str | os.PathLike[str], *, device: str = "auto", precision: str = "auto"
) -> Model:
    """A shipped model by name ("blind-x4"; `twostage models` lists them), a pipeline bundle,
    any checkpoint `restore --model` takes, or an `.onnx` file. `device`: auto, cpu, cuda or
    cuda:N; `precision`: auto, fp32, bf32 or bf16 (docs/restore.md). Nothing in the file runs
    as code."""
    from twostage.models.shipped import SHIPPED
    from twostage.restore import open_model

    if not isinstance(name_or_path, str | os.PathLike):
        raise UserError(f"load: expected a model name or path, got {type(name_or_path).__name__}")
    pipe = open_model(name_or_path, device=device, precision=precision)
    shipped = isinstance(name_or_path, str) and name_or_path in SHIPPED
    device_name = pipe.device_name if hasattr(pipe, "device_name") else str(pipe.device())
    return Model(
        name=str(name_or_path) if shipped else pipe.name or Path(name_or_path).stem,
        scale=pipe.scale,
        precision=pipe.precision.mode,
        device=device_name,
        strength=getattr(pipe, "strength", 1.0),
        _pipeline=pipe,
    )


# ----------------------------------------------------------------------------- degrade, score


def degrade(
    image: ImageLike, preset: str | os.PathLike[str], *, scale: int | None = None, seed: int = 0
) -> np.ndarray:
    """`image` degraded by a preset (a name, or a preset YAML file): float32 H×W×3 in [0, 1],
    on the 8-bit grid unless the preset keeps float output (the blur presets). `scale`: the
    preset's own by default. `twostage degrade` does this to each file with the seed
    `ops.degrade.derive_seed(--seed, file stem)`; here the seed is used as given."""
    from twostage.ops.degrade import degrade as degrade_array

    pixels, _ = _pixels(image, "degrade")
    seed = _non_negative_int(seed, "seed")
    number = _integer(scale)  # numpy's integers too; anything else gets the scale check's error
    return degrade_array(
        pixels, os.fspath(preset), scale=scale if number is None else number, seed=seed
    )


@dataclass(frozen=True)
class Scores:
    """PSNR (dB, capped at 100) and SSIM, as `twostage evaluate` computes them."""

    psnr: float
    ssim: float


def score(
    pred: ImageLike, gt: ImageLike, *, crop_border: int = 0, y_channel: bool = False
) -> Scores:
    """PSNR and SSIM of a prediction against its ground truth (docs/report.md): both rounded to
    8 bits, `crop_border` pixels cropped at each side, RGB or Y (BT.601)."""
    from twostage.evaluate import evaluate_arrays

    p, _ = _pixels(pred, "pred")
    g, _ = _pixels(gt, "gt")
    if p.shape != g.shape:
        (ph, pw), (gh, gw) = p.shape[:2], g.shape[:2]
        raise UserError(f"pred is {pw}x{ph} but gt is {gw}x{gh}")
    crop = _non_negative_int(crop_border, "crop_border")
    row = evaluate_arrays(p, g, crop_border=crop, y_channel=bool(y_channel))
    return Scores(psnr=row["psnr"], ssim=row["ssim"])


# ----------------------------------------------------------------------------- run, train


@dataclass(frozen=True)
class Mean:
    """One branch on one test set: its metrics averaged over the images (and seeds)."""

    branch: str
    test_set: str
    psnr: float
    ssim: float
    images: int
    lpips_alex: float | None = None  # when the optional lpips package is installed
    lpips_vgg: float | None = None


@dataclass(frozen=True)
class RunResults:
    """What `run` produced: the run folder, the branches and test sets, their means, and
    results.json's whole dict as `data` (docs/design.md, "Contracts")."""

    out: Path
    recipe: str
    profile: str
    branches: tuple[str, ...]
    test_sets: tuple[str, ...]
    means: tuple[Mean, ...]
    data: dict = field(repr=False)

    def mean(self, branch: str, test_set: str) -> Mean:
        """The mean of `branch` on `test_set`; a UserError names the ones there are."""
        for m in self.means:
            if (m.branch, m.test_set) == (branch, test_set):
                return m
        raise UserError(
            f"no mean for branch {short(branch)} on {short(test_set)}; branches: "
            f"{', '.join(self.branches)}; test sets: {', '.join(self.test_sets)}"
        )


def _names(value: Sequence[str] | None, what: str) -> list[str] | None:
    if isinstance(value, str):
        raise UserError(f"{what}: expected a list of names, got the string {short(value)}")
    return None if value is None else list(value)


def run(
    recipe: str | os.PathLike[str] | Recipe,
    *,
    out: str | os.PathLike[str],
    data: Mapping[str, str | os.PathLike[str]]
    | Sequence[tuple[str, str | os.PathLike[str]]]
    | None = None,
    profile: str = "cpu",
    seeds: int = 1,
    device: str = "auto",
    precision: str = "fp32",
    branches: Sequence[str] | None = None,
    offshelf: Mapping[str, str | os.PathLike[str]] | None = None,
    test_suite: bool = False,
    quiet: bool = False,
    max_pixels: int = MAX_PIXELS,
    skip_unreadable: bool = False,
) -> RunResults:
    """Run a recipe (sr-x4, sr-x2, bicubic-x4, deblur, or a recipe YAML) into the run folder `out`,
    as `twostage run` does (docs/experiments.md): train, map, evaluate, write the report.
    `data`: `--data` entries as (name, path) pairs (photos may repeat) or a mapping."""
    from twostage.runner import run_recipe

    out = Path(out)
    results = run_recipe(
        recipe,
        data=[(k, Path(v)) for k, v in (data.items() if isinstance(data, Mapping) else data or [])],
        profile=profile,
        out=out,
        seeds=seeds,
        device=device,
        quiet=quiet,
        branches=_names(branches, "branches"),
        offshelf={k: Path(v) for k, v in (offshelf or {}).items()},
        test_suite=test_suite,
        precision=precision,
        max_pixels=max_pixels,
        skip_unreadable=skip_unreadable,
    )
    means = tuple(
        Mean(
            branch=m["branch"],
            test_set=m["test_set"],
            psnr=m["psnr"],
            ssim=m["ssim"],
            images=m["images"],
            lpips_alex=m.get("lpips_alex"),
            lpips_vgg=m.get("lpips_vgg"),
        )
        for m in results["means"]
    )
    return RunResults(
        out=out,
        recipe=results["recipe"],
        profile=results["profile"],
        branches=tuple(results["branches"]),
        test_sets=tuple(results["test_sets"]),
        means=means,
        data=results,
    )


def train_network(
    config: str | os.PathLike[str] | TrainConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    overrides: Sequence[str] = (),
    device: str | None = None,
    quiet: bool = False,
) -> TrainResult:
    """Train one network from a config YAML (or a `TrainConfig`), as `twostage train` does
    (docs/training.md). `overrides`: KEY=VALUE strings (`--set`); `out`: the run folder
    (default runs/<the config's name, else its file stem>). Returns the `TrainResult`: the
    model file, the final network, its validation PSNR/SSIM."""
    from twostage.config import TrainConfig, apply_overrides, load_config
    from twostage.train import train

    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    cfg = apply_overrides(cfg, _names(overrides, "overrides") or [])
    if device is not None:
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    if out is None:
        stem = "" if isinstance(config, TrainConfig) else Path(config).stem
        if not (cfg.name or stem):
            raise UserError("train_network: give out= (the config has no name)")
        out = Path("runs") / (cfg.name or stem)
    return train(cfg, out=Path(out), resume=resume, overwrite=overwrite, quiet=quiet)
