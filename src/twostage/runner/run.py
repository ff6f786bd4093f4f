"""Runs a recipe end to end for each seed and assembles results.json, the report and the page."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from twostage import generalize, stages
from twostage.config import Profile, get_profile
from twostage.data.splits import DETAIL, TestSet, plan_data
from twostage.errors import UserError
from twostage.limits import MAX_PIXELS, MAX_SEEDS
from twostage.models.inference import PRECISIONS
from twostage.ops.degrade import SUITE
from twostage.ops.files import LOCK_NAME, folder_lock, is_temp_name
from twostage.ops.metrics import Lpips
from twostage.recipes import Claim, Recipe, load_recipe
from twostage.report import Comparison, compute_means, describe, write_report
from twostage.report_html import ViewSet, write_page
from twostage.runner.bundles import write_bundles
from twostage.runner.dryrun import dry_run as dry_run_plan
from twostage.runner.evaluation import evaluate, lpips_models
from twostage.runner.networks import Run
from twostage.runner.progress import Progress, estimate
from twostage.runner.stages import stage_rows

# Written into --out by a run: the folder is a twostage run's, which a later run may reuse.
RUN_MARK = "twostage-run.txt"


def _one_seed(
    run: Run, lpips: dict[str, Lpips]
) -> tuple[list[dict], list[dict], list[Comparison], list[ViewSet]]:
    """Train what the branches need, map the test sets, evaluate (rows, then the stage-wise
    rows of the two-stage branches); bundles for seed 0."""
    rec = run.recipe
    for name, _ in rec.given:  # every given checkpoint is loaded and checked before training
        run.instance(rec.network(name), rec.degradations[0])
    for net in rec.needed_networks():
        for deg in rec.degradations if net.per_degradation else rec.degradations[:1]:
            run.instance(net, deg)
    # Mapped sets of every stage 1 on the test sets (train sets were written as needed).
    for branch in rec.branches:
        for test in run.test_sets:
            if branch.stage1:
                s1 = run.instance(rec.network(branch.stage1), test.networks_of)
                run.mapped(s1, test.split, test.degradation, set_name=test.name)
    rows, strips, views = evaluate(run, seed=run.seed, keep_first=run.seed == 0, lpips=lpips)
    staged = stage_rows(run, rows, seed=run.seed)
    if run.seed == 0:
        write_bundles(run)
    return rows, staged, strips, views


@dataclass
class _Seeds:
    """What the seeds of one run produced: every seed's rows; figures and networks of seed 0."""

    rows: list[dict] = field(default_factory=list)
    stage_rows: list[dict] = field(default_factory=list)
    strips: list[Comparison] = field(default_factory=list)
    views: list[ViewSet] = field(default_factory=list)
    trained_now: list[str] = field(default_factory=list)
    training_amp: set[str] = field(default_factory=set)
    networks: dict[str, Path] = field(default_factory=dict)


def _run_seeds(
    new_run: Callable[[int], Run], progress: Progress, lpips: dict[str, Lpips], *, seeds: int
) -> _Seeds:
    """Seeds 0..N-1 one after the other (`new_run(seed)`; networks are cached per seed), then
    the bar is closed."""
    done = _Seeds()
    try:
        for seed in range(seeds):
            run = new_run(seed)
            seed_rows, seed_stages, seed_strips, seed_views = _one_seed(run, lpips)
            done.rows += seed_rows
            done.stage_rows += seed_stages
            done.trained_now += run.trained_now
            done.training_amp |= run.training_amp
            if seed == 0:
                done.strips, done.views = seed_strips, seed_views
                done.networks = {i.label: i.folder for i in run.trained.values() if i.given is None}
    finally:
        progress.close()
    return done


def run_recipe(
    recipe: str | Path | Recipe,
    *,
    data: dict[str, Path] | Sequence[tuple[str, Path]] | None = None,
    profile: str | Profile = "cpu",
    out: Path,
    seeds: int = 1,
    device: str = "auto",
    quiet: bool = False,
    branches: Sequence[str] | None = None,
    offshelf: dict[str, Path] | None = None,
    test_suite: bool = False,
    precision: str = "fp32",
    dry_run: bool = False,
    max_pixels: int = MAX_PIXELS,
    skip_unreadable: bool = False,
) -> dict:
    """Run a recipe end to end in `out` (see the package docstring) and return results.json's dict.

    `seeds`: repeat with seeds 0..N-1 (networks are cached per seed); the report gives mean ±
    std over seeds; bundles and figures come from seed 0. `offshelf`: network name → checkpoint
    for off-the-shelf networks to load instead of train (e.g. {"offshelf-x2": EDSR_x2.pt}).
    `test_suite`: also test on every held-out SUITE degradation. `precision`: of the evaluated
    branches (fp32 by default, so that tables reproduce across machines; auto, bf32 or bf16
    run faster where the hardware has bf16, and are recorded in results.json); training and
    the mapped sets stay as the training config says. `dry_run`: print what the run would
    train and test, and an estimate of its training time; train and write nothing.
    """
    data = list(data.items()) if isinstance(data, dict) else list(data or [])
    rec = _chosen(recipe, branches, offshelf)
    rec = rec.with_suite() if test_suite else rec
    prof = get_profile(profile)
    _check_options(seeds=seeds, precision=precision)
    if prof.threads:
        torch.set_num_threads(prof.threads)
    out = Path(out)
    train, tests = plan_data(
        rec,
        data,
        prof,
        sr=rec.base != "deblur",
        max_pixels=max_pixels,
        skip_unreadable=skip_unreadable,
    )
    if dry_run:
        seconds = dry_run_plan(rec, prof, train, tests, seeds=seeds, device=device)
        return {"recipe": rec.name, "dry_run": True, "estimated_training_seconds": seconds}
    _check_out(out)
    then = "then run again: it reuses the finished networks and resumes the others"
    with folder_lock(out, "--out", then=then):  # two runs in one folder would race
        (out / RUN_MARK).touch()
        progress = Progress(
            estimate(rec, prof, tests, seeds), quiet=quiet, desc=f"{rec.name} ({prof.name})"
        )
        lpips = lpips_models(device if device != "auto" else "cpu")
        start = time.perf_counter()
        new_run = functools.partial(
            Run, rec, prof, out, device, quiet, train, tests, progress, precision=precision
        )
        done = _run_seeds(new_run, progress, lpips, seeds=seeds)
        seconds = round(time.perf_counter() - start, 1)
        results = _results(rec, prof, tests, done, seeds=seeds, seconds=seconds)
        results["lpips"] = sorted(lpips)
        results["precision"] = precision
        results["training_amp"] = sorted(done.training_amp)  # run.amp as resolved on this machine
        _write_report(results, out, done, rec.claim)
        return results


def _write_report(results: dict, out: Path, done: _Seeds, claim: Claim | None) -> None:
    """results.{json,csv,md,tex} and figures (report.py), then index.html (report_html.py)
    with the reading of the recipe's claim."""
    write_report(results, out)
    write_page(
        results,
        out,
        strips=done.strips,
        views=done.views,
        networks=done.networks,
        reading=describe(results, claim),
    )


def _check_out(out: Path) -> None:
    """--out is new, empty, or an earlier run's folder (its RUN_MARK, or the networks/ of a run
    from before the mark), and holds no symbolic link: a run writes only inside --out, and
    only over what a run wrote."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is not a folder")
    names = sorted(
        e.name for e in out.iterdir() if not (is_temp_name(e.name) or e.name == LOCK_NAME)
    )
    networks = out / "networks"
    ours = (out / RUN_MARK).is_file() or (networks.is_dir() and not networks.is_symlink())
    if names and not ours:
        more = ", …" if len(names) > 3 else ""
        raise UserError(
            f"--out {out} holds files twostage run did not write ({', '.join(names[:3])}{more}); "
            "choose a new or empty folder"
        )
    for root, dirs, files in os.walk(out):
        for name in (*dirs, *files):
            if (Path(root) / name).is_symlink():
                raise UserError(
                    f"{Path(root) / name} is a symbolic link; twostage run writes only inside "
                    "--out: move it out of the way, or choose another --out"
                )


def _check_options(*, seeds: int, precision: str) -> None:
    """--seeds and --precision, refused with the option's name."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise UserError(f"--seeds must be from 1 to {MAX_SEEDS}, got {seeds}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _chosen(
    recipe: str | Path | Recipe,
    branches: Sequence[str] | None,
    offshelf: dict[str, Path] | None,
) -> Recipe:
    """The recipe with the chosen branches and the given networks."""
    rec = load_recipe(recipe)
    if branches:
        rec = rec.with_branches(list(branches))
    if offshelf:
        rec = rec.with_given(dict(offshelf))
    return rec


def _results(
    rec: Recipe,
    prof: Profile,
    tests: list[TestSet],
    done: _Seeds,
    *,
    seeds: int,
    seconds: float,
) -> dict:
    """results.json's dict (docs/design.md, "Contracts")."""
    results = {
        "recipe": rec.name,
        "profile": prof.name,
        "seed": 0,
        "in_distribution": tests[0].name if tests else None,
        "test_sets": [t.name for t in tests],
        "branches": ["interp-bicubic", *(b.name for b in rec.branches)],
        "rows": done.rows,
        "means": compute_means(done.rows),
    }
    suite = [t for t in tests if t.degradation in SUITE]
    if suite:  # the fine-detail images' suite mean is reported apart from the photos'
        photos = [t.name for t in suite if t.split.source != DETAIL]
        detail = [t.name for t in suite if t.split.source == DETAIL]
        results["generalization"] = generalize.matrix(results, suite=photos, detail=detail)
    if done.stage_rows:
        results["stages"] = {
            "branches": [b.name for b in rec.branches if b.stage1],
            "test_sets": [t.name for t in tests],
            "crop_border": rec.scale,
            "rows": done.stage_rows,
            "means": compute_means(done.stage_rows, keys=stages.KEYS),
        }
    if seeds > 1:
        results["seeds"] = list(range(seeds))
    results["networks_trained"] = done.trained_now
    results["seconds"] = seconds
    return results
