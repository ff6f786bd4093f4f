"""`twostage evaluate`: PSNR/SSIM (and LPIPS) of predicted images against ground truth.

Predictions and ground truth are paired by file stem after stripping the usual SR suffixes
(`0801x4.png` ↔ `0801.png`, `Canon_001_LR4` ↔ `Canon_001_HR`). Metrics follow docs/design.md (see
`twostage.ops.metrics`): uint8-rounded, [0, 255], crop `crop_border`, RGB or Y. PSNR is capped
at 100 dB (`metrics.PSNR_CEILING`): an identical pair scores 100, so the mean stays finite.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from twostage.data.datasets import index_by_stem, strip_suffixes
from twostage.errors import InputWarning, UserError
from twostage.limits import MAX_PIXELS
from twostage.ops.files import check_output_file, write_text_atomic
from twostage.ops.imageio import read_image
from twostage.ops.inputs import expand_inputs
from twostage.ops.metrics import Lpips, psnr, ssim
from twostage.ops.progress import bar, on_terminal, stage_line

__all__ = ["evaluate_arrays", "evaluate_folders", "format_evaluation", "strip_suffixes"]

_PROGRESS_ABOVE = 20  # images; fewer finish before a bar would help


MetricFn = Callable[[np.ndarray, np.ndarray], float]


def evaluate_arrays(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    crop_border: int,
    y_channel: bool,
    lpips_models: Mapping[str, Lpips | MetricFn] | None = None,
) -> dict[str, float]:
    """{"psnr", "ssim", and one entry per LPIPS model, keyed as given (e.g. "lpips_alex")}.

    LPIPS is computed on the whole image (no crop, RGB), as its reference code does.
    """
    row = {
        "psnr": psnr(pred, gt, crop_border=crop_border, y_channel=y_channel),
        "ssim": ssim(pred, gt, crop_border=crop_border, y_channel=y_channel),
    }
    for key, model in (lpips_models or {}).items():
        row[key] = float(model(pred, gt))
    return row


def _images(path: Path, role: str) -> list[Path]:
    if not path.exists():
        raise UserError(f"--{role} {path}: no such file or folder")
    try:
        return expand_inputs([path])
    except UserError as exc:
        raise UserError(f"--{role} {path}: {exc}") from None


def _index(files: list[Path], role: str) -> dict[str, Path]:
    try:
        return index_by_stem(files)
    except UserError as exc:
        raise UserError(f"--{role}: {exc}") from None


def _pairs(
    pred: Path, pred_files: list[Path], gt: Path, gt_files: list[Path], allow_missing: bool
) -> list[tuple[str, Path, Path]]:
    """(name, prediction, ground truth) for every prediction; every one must have a partner,
    and every ground truth a prediction (else the mean covers only part of the set) unless
    `allow_missing`, which makes that a warning."""
    if pred.is_file() and gt.is_file():
        return [(strip_suffixes(pred.stem), pred, gt)]
    gts, preds = _index(gt_files, "gt"), _index(pred_files, "pred")
    pairs = []
    for name, p in preds.items():
        if name not in gts:
            raise UserError(f"no ground truth for {p} (looked for {name!r} in {gt})")
        pairs.append((name, p, gts[name]))
    missing = [str(g) for name, g in gts.items() if name not in preds]
    if missing:
        message = (
            f"{len(missing)} of {len(gts)} ground-truth image(s) have no prediction in {pred}: "
            f"{', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}"
        )
        if not allow_missing:
            raise UserError(f"{message} (--allow-missing scores the rest)")
        warnings.warn(
            f"{message}; the means cover the other {len(pairs)}", InputWarning, stacklevel=3
        )
    return pairs


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _json_number(v: float) -> float | None:
    """JSON has no infinity or NaN: written as null (PSNR itself is capped, so finite)."""
    return None if math.isinf(v) or math.isnan(v) else v


def evaluate_folders(
    pred: Path,
    gt: Path,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    lpips: Sequence[str] = (),
    json_path: Path | None = None,
    quiet: bool = False,
    allow_missing: bool = False,
    max_pixels: int = MAX_PIXELS,
    overwrite: bool = False,
) -> dict:
    """Score every prediction against its ground truth; optionally write the result as JSON.

    `pred` and `gt` are folders (searched recursively) or single files. Returns
    {"images": [{"name", "pred", "gt", "psnr", "ssim", "lpips_alex"?, ...}], "mean": {...},
    "crop_border", "y_channel"}. A missing partner, unequal sizes or an unreadable file raise
    UserError before anything is written; the JSON is written atomically (strict JSON: any
    non-finite number as null). `json_path` is never an input image; an existing file is
    replaced only with `overwrite`.
    """
    pred, gt = Path(pred), Path(gt)
    pred_files, gt_files = _images(pred, "pred"), _images(gt, "gt")
    if json_path is not None:
        inputs = [*pred_files, *gt_files]
        check_output_file(json_path, "--json", inputs=inputs, overwrite=overwrite)
    pairs = _pairs(pred, pred_files, gt, gt_files, allow_missing)
    models = {f"lpips_{net}": Lpips(net) for net in dict.fromkeys(lpips)}
    score = partial(
        evaluate_arrays, crop_border=crop_border, y_channel=y_channel, lpips_models=models
    )
    rows = _score_pairs(pairs, score, quiet=quiet, max_pixels=max_pixels)
    keys = ["psnr", "ssim", *models]
    result = {
        "images": rows,
        "mean": {k: _mean([r[k] for r in rows]) for k in keys},
        "crop_border": crop_border,
        "y_channel": y_channel,
    }
    if json_path is not None:
        _write_json(json_path, result)
    return result


def _score_pairs(
    pairs: list[tuple[str, Path, Path]],
    score: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    *,
    quiet: bool,
    max_pixels: int,
) -> list[dict]:
    """One row per (name, prediction, ground truth): its files and `score`s."""
    rows = []
    few, start = len(pairs) <= _PROGRESS_ABOVE, time.perf_counter()
    images = bar(pairs, quiet=quiet or few, desc="evaluate", unit="img", leave=False)
    for name, p, g in images:
        p_img, _ = read_image(p, max_pixels=max_pixels)
        g_img, _ = read_image(g, max_pixels=max_pixels)
        if p_img.shape != g_img.shape:
            (ph, pw), (gh, gw) = p_img.shape[:2], g_img.shape[:2]
            raise UserError(f"{p} is {pw}x{ph} but its ground truth {g} is {gw}x{gh}")
        scores = score(p_img, g_img)
        rows.append({"name": name, "pred": str(p), "gt": str(g), **scores})
    if not (quiet or few or on_terminal()):
        stage_line(f"evaluated {len(rows)} images", time.perf_counter() - start)
    return rows


def _write_json(json_path: Path, result: dict) -> None:
    """The result as strict JSON (a non-finite number as null), written atomically."""
    serialisable = {
        **result,
        "images": [
            {k: _json_number(v) if isinstance(v, float) else v for k, v in r.items()}
            for r in result["images"]
        ],
        "mean": {k: _json_number(v) for k, v in result["mean"].items()},
    }
    write_text_atomic(json_path, json.dumps(serialisable, indent=2, allow_nan=False) + "\n")


def _fmt(value: float, digits: int) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def format_evaluation(result: dict) -> str:
    """A per-image table and the mean, for the terminal."""
    keys = list(result["mean"])
    titles = {"psnr": "PSNR", "ssim": "SSIM"}
    heads = [titles.get(k, k.replace("lpips_", "LPIPS-")) for k in keys]
    names = [r["name"] for r in result["images"]] + [f"mean ({len(result['images'])})"]
    width = max(len("image"), *(len(n) for n in names))
    cols = [max(len(h), 10) for h in heads]
    lines = ["  ".join([f"{'image':<{width}}", *(f"{h:>{c}}" for h, c in zip(heads, cols))])]
    for r in result["images"]:
        cells = [f"{_fmt(r[k], 4):>{c}}" for k, c in zip(keys, cols)]
        lines.append("  ".join([f"{r['name']:<{width}}", *cells]))
    cells = [f"{_fmt(result['mean'][k], 4):>{c}}" for k, c in zip(keys, cols)]
    lines.append("  ".join([f"{names[-1]:<{width}}", *cells]))
    space = "Y (BT.601)" if result.get("y_channel") else "RGB"
    lines.append(f"({space}, {result.get('crop_border', 0)} border pixels cropped)")
    return "\n".join(lines)
