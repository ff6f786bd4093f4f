"""Evaluation of a recipe's branches: every branch (and interp-bicubic) on every test set.

Each restored image is scored by `evaluate.evaluate_arrays` (the one metric path); the first
seed also keeps the crop strip of each test set's first image and the viewer's images.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from twostage.data.splits import TestSet
from twostage.errors import UserError
from twostage.evaluate import evaluate_arrays
from twostage.ops.metrics import Lpips
from twostage.ops.resize import imresize
from twostage.report import Comparison, Panel
from twostage.report_html import ViewSet, save_views
from twostage.runner.networks import Run, branch_pipeline


def lpips_models(device: str) -> dict[str, Lpips]:
    """LPIPS-Alex/VGG when the optional `lpips` + `torchvision` are installed, else none."""
    try:
        return {f"lpips_{net}": Lpips(net, device=device) for net in ("alex", "vgg")}
    except (UserError, ImportError, OSError, RuntimeError):
        return {}


def bicubic_up(img: np.ndarray, scale: int) -> np.ndarray:
    """interp-bicubic: MATLAB bicubic ×scale (the identity at scale 1)."""
    if scale == 1:
        return img
    return np.clip(imresize(img, float(scale)), 0.0, 1.0)


def _outputs(run: Run, test: TestSet) -> dict[str, list[np.ndarray]]:
    """Every branch's (and interp-bicubic's) restored images of one test set."""
    scale = run.recipe.scale
    inputs = test.split.inputs(test.degradation, scale=scale)
    outputs = {"interp-bicubic": [bicubic_up(x, scale) for x in inputs]}
    for branch in run.recipe.branches:
        pipe = branch_pipeline(run, branch, test.networks_of)
        xs = test.split.domain(branch.domain) if branch.input == "domain" else inputs
        outputs[branch.name] = [
            pipe.restore(x, device=run.device, precision=run.precision) for x in xs
        ]
        run.progress(len(xs), f"evaluated {branch.name} on {test.name}")
    return outputs


def _shown_input(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The input at the ground truth's size, its own pixels enlarged (nearest), for the page."""
    up = np.repeat(np.repeat(x, -(-shape[0] // x.shape[0]), 0), -(-shape[1] // x.shape[1]), 1)
    return up[: shape[0], : shape[1]]


def _comparisons(
    test: TestSet, outputs: dict[str, list[np.ndarray]], rows: list[dict], scale: int
) -> Iterator[Comparison]:
    """One Comparison per test image (GT, the input, interp-bicubic, every branch), made one
    at a time: an enlarged input is as big as an output."""
    psnr = {(r["branch"], r["image"]): r["psnr"] for r in rows if r["test_set"] == test.name}
    inputs = test.split.inputs(test.degradation, scale=scale)
    for i, (image, hr, x) in enumerate(zip(test.split.names, test.split.hr, inputs)):
        panels = [Panel("GT", hr, None), Panel("input", _shown_input(x, hr.shape), None)]
        panels += [Panel(name, preds[i], psnr[(name, image)]) for name, preds in outputs.items()]
        yield Comparison(test.name, image, tuple(panels))


def evaluate(
    run: Run, *, seed: int, keep_first: bool, lpips: dict[str, Lpips]
) -> tuple[list[dict], list[Comparison], list[ViewSet]]:
    """Rows for every branch (and interp-bicubic) × test set × image; with `keep_first`, the
    crop strip of each test set's first image and the viewer's images of every test image."""
    rows: list[dict] = []
    strips, views = [], []
    for test in run.test_sets:
        outputs = _outputs(run, test)
        hrs = test.split.hr
        for name, preds in outputs.items():
            for image, pred, hr in zip(test.split.names, preds, hrs):
                scores = evaluate_arrays(
                    pred, hr, crop_border=run.recipe.scale, y_channel=False, lpips_models=lpips
                )
                rows.append(
                    {"branch": name, "test_set": test.name, "image": image, **scores, "seed": seed}
                )
        if keep_first:
            for i, comparison in enumerate(_comparisons(test, outputs, rows, run.recipe.scale)):
                strips += [comparison] if i == 0 else []
                views.append(save_views(comparison, run.out))
    return rows, strips, views
