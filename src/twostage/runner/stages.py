"""Stage-wise diagnostics of a run's two-stage branches: each stage on its own job.

For every branch with a stage 1 and every test set, per image: stage 1's output (its mapped
set, read back from mapped/) against the true intermediate (the branch's domain image of HR),
beside MATLAB bicubic of the input resized to the intermediate's size (the input itself for a
×1 map); stage 2 alone on the true intermediate against HR (the ceiling a perfect stage 1
would reach), beside bicubic of the true intermediate; and the whole pipeline with
interp-bicubic (the evaluation's rows). PSNR as the rows score it (`ops.metrics.psnr`, RGB),
with the rows' border: `scale` pixels of HR, i.e. scale ÷ (the domain's factor) pixels of an
intermediate image. One image in memory at a time. results.json's "stages" (stages.py).
"""

from __future__ import annotations

from pathlib import Path

from twostage.data.splits import TestSet
from twostage.ops.degrade import DOMAINS
from twostage.ops.metrics import psnr
from twostage.pipeline import Pipeline
from twostage.recipes import BranchDef
from twostage.runner.configs import TrainedNetwork, bit_depth
from twostage.runner.evaluation import bicubic_up
from twostage.runner.networks import Run, branch_instances

# A stage 2 on the true intermediate of a split does not depend on the test set's degradation:
# its scores are computed once per (stage-2 weights, repeats, domain, split).
_CeilingKey = tuple[Path, int, str, int]


def stage_rows(run: Run, rows: list[dict], *, seed: int) -> list[dict]:
    """One row per two-stage branch × test set × image (keys: docs/report.md)."""
    whole = {(r["branch"], r["test_set"], r["image"]): r["psnr"] for r in rows}
    ceilings: dict[_CeilingKey, list[tuple[float, float]]] = {}
    out = []
    for test in run.test_sets:
        for branch in run.recipe.branches:
            if not branch.stage1:
                continue
            s1, s2 = branch_instances(run, branch, test.networks_of)
            assert s1 is not None  # a branch with a stage 1
            key = (s2.weights, branch.stage2_repeats, branch.domain, id(test.split))
            if key not in ceilings:
                ceilings[key] = _ceiling(run, branch, s2, test)
            first = _stage1(run, branch, s1, test)
            for image, one, two in zip(test.split.names, first, ceilings[key]):
                out.append(
                    {
                        "branch": branch.name,
                        "test_set": test.name,
                        "image": image,
                        "stage1_psnr": one[0],
                        "stage1_bicubic_psnr": one[1],
                        "stage2_psnr": two[0],
                        "stage2_bicubic_psnr": two[1],
                        "pipeline_psnr": whole[(branch.name, test.name, image)],
                        "pipeline_bicubic_psnr": whole[("interp-bicubic", test.name, image)],
                        "seed": seed,
                    }
                )
    return out


def _stage1(
    run: Run, branch: BranchDef, s1: TrainedNetwork, test: TestSet
) -> list[tuple[float, float]]:
    """(stage 1, bicubic) PSNR against the true intermediate, per image of the test set."""
    border = run.recipe.scale // DOMAINS[branch.domain].factor  # the rows' border, in HR
    mapped = run.mapped(s1, test.split, test.degradation, set_name=test.name)  # written before
    inputs = test.split.inputs(test.degradation, scale=run.recipe.scale)
    truth = test.split.domain(branch.domain)
    scores = []
    for i in range(len(test.split.names)):
        target = truth[i]
        up = bicubic_up(inputs[i], s1.definition.scale)
        scores.append(
            (psnr(mapped[i], target, crop_border=border), psnr(up, target, crop_border=border))
        )
    return scores


def _ceiling(
    run: Run, branch: BranchDef, s2: TrainedNetwork, test: TestSet
) -> list[tuple[float, float]]:
    """(stage 2, bicubic) PSNR against HR from the true intermediate, per image of the split."""
    border = run.recipe.scale
    pipe = Pipeline(
        None,
        run.model(s2),
        stage2_repeats=branch.stage2_repeats,
        intermediate_bit_depth=bit_depth(branch.domain),
    )
    truth = test.split.domain(branch.domain)
    scores = []
    for i in range(len(test.split.names)):
        hr = test.split.hr[i]
        x = truth[i]
        y = pipe.restore(x, device=run.device, precision=run.precision)
        up = bicubic_up(x, pipe.scale)
        scores.append((psnr(y, hr, crop_border=border), psnr(up, hr, crop_border=border)))
    run.progress(0.0, f"stage 2 of {branch.name} on the true intermediate of {test.name}")
    return scores
