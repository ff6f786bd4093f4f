"""Issue 14's integration: training on `realistic` drawn afresh per patch (fresh_batch, exact
resume), the held-out suite in recipes (`suite`, `--test-suite`), the generalization matrix
of results.json recomputed from its rows, and a blind stage 1 in front of a given EDSR."""

from __future__ import annotations

import dataclasses
import json
import signal
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import twostage.train as train_mod
import twostage.train.loop as train_loop
from twostage.cli import main
from twostage.config import apply_overrides, profile_defaults
from twostage.data.datasets import (
    PairSet,
    SamplesData,
    centre_crop,
    fresh_batch,
    open_dataset,
    per_patch_pair,
    random_batch,
)
from twostage.data.samples import load_samples
from twostage.errors import UserError
from twostage.generalize import matrix
from twostage.ops.degrade import SUITE, derive_seed, intermediate
from twostage.ops.realistic import degrade_batch
from twostage.ops.resize import imresize
from twostage.recipes import recipe_from_dict, sr_x4
from twostage.runner import run_recipe


def _photo_pairs(target_domain: str | None) -> PairSet:
    hr = centre_crop(load_samples("test")[0][1], crop=96, mod=4)
    target = None if target_domain is None else intermediate(target_domain, hr)
    pair = per_patch_pair("astronaut", hr.astype(np.float32) / 255.0, target)
    factor = 1 if target_domain is None else int(target_domain[-1])
    return PairSet([pair], scale=factor, name="photo")


def test_fresh_batch_degrades_each_hr_patch_and_keeps_its_aligned_target() -> None:
    """map2's pairs: input = degrade_batch(HR crop) afresh, target = the bicubic ↓2 of the
    same HR (the whole image's, cropped where the HR crop is)."""
    pairs = _photo_pairs("bicubic-x2")
    kwargs = {"preset": "realistic", "scale": 4, "batch_size": 3, "patch_size": 8, "seed": 5}
    x, y = fresh_batch(pairs, rng=np.random.default_rng(1), iteration=7, first_index=2, **kwargs)
    assert x.shape == (3, 3, 8, 8) and y.shape == (3, 3, 16, 16)
    y_again, hr = random_batch(pairs, batch_size=3, patch_size=16, rng=np.random.default_rng(1))
    assert torch.equal(y, y_again)
    want = degrade_batch(hr, scale=4, seed=derive_seed(5, "per-patch"), iteration=7, first_index=2)
    assert torch.equal(x, want)
    for i in range(3):  # the target is the ↓2 of this very HR crop (away from its borders)
        down = np.clip(imresize(hr[i].numpy().transpose(1, 2, 0), 0.5), 0, 1)
        assert np.abs(down - y[i].numpy().transpose(1, 2, 0))[3:-3, 3:-3].max() < 1.5 / 255
    # another iteration or index degrades afresh; the crops (and targets) stay
    x2, y2 = fresh_batch(pairs, rng=np.random.default_rng(1), iteration=8, first_index=2, **kwargs)
    assert torch.equal(y2, y) and not torch.equal(x2, x)
    with pytest.raises(UserError, match="preset gaussian-aniso is not a per-patch family"):
        fresh_batch(
            pairs, rng=np.random.default_rng(1), iteration=0, first_index=0,
            **(kwargs | {"preset": "gaussian-aniso"}),
        )  # fmt: skip


def test_per_patch_spec_loads_target_hr_pairs_at_every_stage_scale() -> None:
    """An image kind + per_patch: (target, HR) pairs; HR = target × (4 / the network's scale)."""
    base = SamplesData(preset="realistic", per_patch=True, limit=1, crop=64)
    for domain, scale in (("bicubic-x2", 2), ("bicubic-x4", 4), (None, 1)):
        pairs = open_dataset(dataclasses.replace(base, target_domain=domain))
        assert pairs.scale == scale and pairs[0].target.shape == (64, 64, 3)
    k = open_dataset(dataclasses.replace(base, per_patch=False, instances=3))
    assert k.names == [f"{k.names[0][:-2]}~{i}" for i in range(3)]
    assert not np.array_equal(k[0].input, k[1].input)  # three different draws of the family


def _per_patch_config(*overrides: str):
    train = (
        "data.train={kind: samples, preset: realistic, per_patch: true, scale: 4, limit: 2, "
        "crop: 48, target_domain: bicubic-x2}"
    )
    cfg = profile_defaults("tiny")
    return apply_overrides(
        cfg, [train, "data.val=null", "optim.iterations=8", "log.checkpoint_every=4", *overrides]
    )


def test_per_patch_training_resumes_bit_exactly(tmp_path: Path, monkeypatch) -> None:
    ref = tmp_path / "ref"
    train_mod.train(_per_patch_config(), out=ref, quiet=True)
    real, calls = train_loop.fresh_batch, {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: a checkpoint at iteration 5
        return real(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(train_loop, "fresh_batch", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(_per_patch_config(), out=out, quiet=True)
    monkeypatch.setattr(train_loop, "fresh_batch", real)
    train_mod.train(_per_patch_config(), out=out, resume=True, quiet=True)
    want, got = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(want[k], got[k]) for k in want)
    other = tmp_path / "other-seed"
    train_mod.train(_per_patch_config("run.seed=1"), out=other, quiet=True)
    changed = load_file(str(other / "model.safetensors"))
    assert any(not torch.equal(want[k], changed[k]) for k in want)


def test_suite_in_recipes_and_with_suite() -> None:
    rec = recipe_from_dict(
        {"base": "sr-x4", "degradations": ["realistic"], "test_degradations": ["camera", "suite"]}
    )
    assert rec.test_degradations == ("camera", *(n for n in SUITE if n != "camera"))
    assert sr_x4().with_suite().test_degradations == ("gaussian-aniso", "camera", *(
        n for n in SUITE if n != "camera"
    ))  # fmt: skip
    assert len(SUITE) == 9


def test_matrix_margins_and_suite_mean_over_two_seeds() -> None:
    psnr = {  # (branch, test set, seed) → PSNR of each of two images
        ("interp-bicubic", "a", 0): (20.0, 22.0),
        ("interp-bicubic", "b", 0): (25.0, 25.0),
        ("interp-bicubic", "a", 1): (20.0, 22.0),
        ("interp-bicubic", "b", 1): (25.0, 25.0),
        ("net", "a", 0): (21.0, 23.0),
        ("net", "b", 0): (24.0, 25.0),
        ("net", "a", 1): (22.0, 24.0),
        ("net", "b", 1): (25.0, 26.0),
    }
    rows = [
        {"branch": b, "test_set": t, "seed": s, "image": str(i), "psnr": v, "ssim": v / 100}
        for (b, t, s), values in psnr.items()
        for i, v in enumerate(values)
    ]
    results = {"test_sets": ["a", "b"], "branches": ["interp-bicubic", "net"], "rows": rows}
    gen = matrix(results, suite=["a", "b"])
    assert gen["psnr"][0] == [21.0, 25.0] and gen["psnr_margin"][0] == [0.0, 0.0]
    assert gen["psnr_margin"][1] == [1.5, 0.0]  # seed 0: +1, -0.5; seed 1: +2, +0.5
    assert gen["psnr_margin_std"][1] == pytest.approx([statistics.stdev([1, 2])] * 2)
    assert gen["mean_psnr_margin"][1] == pytest.approx(0.75)  # mean of 0.25 and 1.25
    assert gen["mean_psnr_margin_std"][1] == pytest.approx(statistics.stdev([0.25, 1.25]))
    assert gen["ssim_margin"][1] == pytest.approx([0.015, 0.0])


def test_the_detail_suite_mean_is_reported_apart_from_the_photos_suite_mean() -> None:
    """Detail test sets change neither the photos' suite mean nor any of its columns; their
    own mean is `detail_mean_*`, shown in results.md and the terminal table."""
    from twostage.generalize import markdown, text_table

    psnr = {
        "a": (20.0, 21.0),
        "b": (25.0, 24.0),
        "detail-a": (30.0, 28.0),
        "detail-b": (18.0, 18.5),
    }
    rows = [
        {"branch": b, "test_set": t, "seed": 0, "image": "x", "psnr": v, "ssim": v / 100}
        for t, (floor, net) in psnr.items()
        for b, v in (("interp-bicubic", floor), ("net", net))
    ]
    results = {"test_sets": list(psnr), "branches": ["interp-bicubic", "net"], "rows": rows}
    photos_only = matrix({**results, "test_sets": ["a", "b"]}, suite=["a", "b"])
    gen = matrix(results, suite=["a", "b"], detail=["detail-a", "detail-b"])
    assert gen["suite"] == ["a", "b"] and gen["detail_suite"] == ["detail-a", "detail-b"]
    assert gen["mean_psnr_margin"] == photos_only["mean_psnr_margin"] == [0.0, 0.0]
    assert gen["detail_mean_psnr_margin"] == [0.0, pytest.approx(-0.75)]  # (-2 + 0.5) / 2
    assert gen["detail_mean_psnr"] == [pytest.approx(24.0), pytest.approx(23.25)]
    assert "detail_suite" not in photos_only and "detail_mean_psnr" not in photos_only
    table = markdown(gen)
    assert (
        "| detail suite mean |" in table and "| `net` | +1.00 | -1.00 | -2.00 | +0.50 | " in table
    )
    assert table.splitlines()[-1].endswith("| +0.00 | -0.75 |")
    (line,) = [ln for ln in text_table(gen).splitlines() if ln.startswith("detail suite mean")]
    assert line.split()[-2:] == ["24.00", "-0.75"]


def test_tiny_realistic_recipe_with_test_suite_end_to_end(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "blind.yaml"
    recipe.write_text(
        "base: sr-x4\ndegradations: [realistic]\ntest_degradations: [realistic]\n"
        "branches: [direct-rcan, map2-specialized-x2]\ndetail_sets: true\n"
    )
    out = tmp_path / "run"
    args = ["run", str(recipe), "--profile", "tiny", "--test-suite", "--out", str(out)]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    suite = [f"samples-{n}" for n in SUITE]
    detail = [f"detail-{n}" for n in SUITE]
    assert results["test_sets"] == ["samples-realistic", *suite, "detail-realistic", *detail]
    assert sorted(results["networks_trained"]) == sorted(
        ["direct-rcan-realistic", "map2-realistic", "offshelf-x2", "specialized-x2-realistic"]
    )
    gen = results["generalization"]
    assert gen["suite"] == suite and gen["branches"] == results["branches"]
    assert gen["detail_suite"] == detail  # the photos' suite mean leaves them out
    by = {(r["branch"], r["test_set"], r["image"]): r["psnr"] for r in results["rows"]}
    for i, branch in enumerate(gen["branches"]):
        for c, test in enumerate(gen["test_sets"]):
            images = [k[2] for k in by if k[:2] == (branch, test)]
            margin = statistics.fmean(
                by[(branch, test, n)] - by[("interp-bicubic", test, n)] for n in images
            )
            assert gen["psnr_margin"][i][c] == pytest.approx(margin, abs=1e-9)
        mean = statistics.fmean(gen["psnr_margin"][i][1:10])
        assert gen["mean_psnr_margin"][i] == pytest.approx(mean, abs=1e-9)
        mean = statistics.fmean(gen["psnr_margin"][i][11:])
        assert gen["detail_mean_psnr_margin"][i] == pytest.approx(mean, abs=1e-9)
    assert (out / "figures" / "generalization.png").stat().st_size > 1000
    assert "## Generalization: PSNR margin over interp-bicubic" in (out / "results.md").read_text()
    page = (out / "index.html").read_text()
    assert "figures/generalization.png" in page and "data-test='detail-mean'" in page
    assert "On the fine-detail images (print and man-made structure)" in page
    assert "| detail suite mean |" in (out / "results.md").read_text()


def test_blind_stage1_in_front_of_a_given_official_edsr(
    tmp_path: Path, monkeypatch, tiny_profile, tiny_test_photos
) -> None:
    """`offshelf:` in a recipe: an official-layout EDSR ×2 is stage 2 behind the stage 1
    trained on realistic; the bundle holds it unchanged and reproduces the report's PSNR."""
    from twostage.models import ModelSpec, build_model
    from twostage.models.checkpoints import save_official
    from twostage.ops.metrics import psnr
    from twostage.pipeline import load_pipeline

    torch.manual_seed(4)
    edsr = build_model(ModelSpec(arch="edsr", scale=2, n_feats=8, n_resblocks=1))
    path = tmp_path / "EDSR_x2.pt"
    save_official(path, edsr)
    recipe = tmp_path / "blind.yaml"
    recipe.write_text(
        "base: sr-x4\ndegradations: [realistic]\ntest_degradations: [realistic, motion]\n"
        f"branches: [map2-offshelf-x2]\noffshelf: {{offshelf-x2: {path}}}\n"
    )
    calls: list[str] = []
    real = train_mod.train
    monkeypatch.setattr(
        train_mod, "train", lambda cfg, **kw: calls.append(cfg.name) or real(cfg, **kw)
    )
    out = tmp_path / "run"
    results = run_recipe(recipe, data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    assert calls == ["map2-realistic"]  # only the blind stage 1 is trained
    pipe = load_pipeline(out / "bundles" / "map2-offshelf-x2.safetensors", device="cpu")
    for key, value in edsr.state_dict().items():
        assert torch.equal(pipe.stage2.state_dict()[key], value), key
    run = json.loads((out / "results.json").read_text())
    assert run["test_sets"] == ["samples-realistic", "samples-motion"]

    for degradation in ("realistic", "motion"):
        ((hr, x),) = tiny_test_photos(degradation, 4)
        row = next(
            r
            for r in results["rows"]
            if r["branch"] == "map2-offshelf-x2" and r["test_set"] == f"samples-{degradation}"
        )
        got = psnr(pipe.restore(x, device="cpu"), hr, crop_border=4)
        assert row["psnr"] == pytest.approx(got, abs=1e-4)
