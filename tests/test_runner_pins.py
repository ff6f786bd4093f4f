"""Pins on how the runner puts the numerics together: one row of every recipe recomputed by
hand, the stage order of every sr-x4 branch, and what invalidates the network cache."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

import twostage.train as train_module
from twostage.models.checkpoints import load_model
from twostage.ops.degrade import PRESETS, save_preset
from twostage.ops.metrics import psnr
from twostage.ops.resize import imresize
from twostage.pipeline import load_pipeline
from twostage.recipes import sr_x4
from twostage.runner import run_recipe


def _net(out: Path, prefix: str) -> torch.nn.Module:
    (path,) = (out / "networks").glob(f"{prefix}-*/model.safetensors")
    return load_model(path).eval()


def _on_disk(t: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2.0**bits - 1
    return torch.floor(t.clamp(0, 1) * levels + 0.5) / levels


def _by_hand(stages: list[torch.nn.Module], x: np.ndarray, bits: int) -> np.ndarray:
    """Each network in turn; between two networks the image is rounded as on disk."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        for i, net in enumerate(stages):
            t = net(_on_disk(t, bits) if i else t)
    return t.clamp(0, 1)[0].numpy().transpose(1, 2, 0)


def _row(results: dict, branch: str, test_set: str) -> float:
    (row,) = [r for r in results["rows"] if (r["branch"], r["test_set"]) == (branch, test_set)]
    return row["psnr"]


def _check(
    out: Path, results: dict, branch: str, tests: dict, stages, bits: int, scale: int, photos
):
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == results["rows"]
    for test_set, degradation in tests.items():
        ((hr, x),) = photos(degradation, scale)
        want = psnr(_by_hand(stages, x, bits), hr, crop_border=scale)
        assert _row(saved, branch, test_set) == want, (branch, test_set)
        up = np.clip(imresize(x, float(scale)), 0, 1) if scale > 1 else x
        assert _row(saved, "interp-bicubic", test_set) == psnr(up, hr, crop_border=scale)


def test_sr_x4_row_recomputed_by_hand(tmp_path, tiny_profile, tiny_test_photos):
    out = tmp_path / "sr"
    recipe = sr_x4().with_branches(["map2-offshelf-x2"])
    results = run_recipe(recipe, data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    stages = [_net(out, "map2-gaussian-aniso"), _net(out, "offshelf-x2")]
    tests = {"samples-gaussian-aniso": "gaussian-aniso", "samples-camera": "camera"}
    _check(out, results, "map2-offshelf-x2", tests, stages, 8, 4, tiny_test_photos)
    bundle = load_pipeline(out / "bundles" / "map2-offshelf-x2.safetensors", device="cpu")
    assert (bundle.quantize_intermediate, bundle.intermediate_bit_depth) == (True, 8)


def test_bicubic_x4_row_recomputed_by_hand(tmp_path, tiny_profile, tiny_test_photos):
    out = tmp_path / "bic"
    results = run_recipe(
        "bicubic-x4",
        data={},
        profile=tiny_profile,
        out=out,
        device="cpu",
        quiet=True,
        branches=["offshelf-x2x2"],
    )
    x2 = _net(out, "offshelf-x2")
    bicubic = {"samples-bicubic": "bicubic"}
    _check(out, results, "offshelf-x2x2", bicubic, [x2, x2], 8, 4, tiny_test_photos)


def test_deblur_row_recomputed_by_hand_with_a_16_bit_intermediate(
    tmp_path, tiny_profile, tiny_test_photos
):
    out = tmp_path / "deblur"
    results = run_recipe(
        "deblur",
        data={},
        profile=tiny_profile,
        out=out,
        device="cpu",
        quiet=True,
        branches=["deblur-mapped"],
    )
    deblurrer = _net(out, "deblur")
    for kernel in ("blur7", "blur11"):
        stages = [_net(out, f"map-{kernel}"), deblurrer]
        tests = {f"samples-{kernel}": kernel}
        _check(out, results, "deblur-mapped", tests, stages, 16, 1, tiny_test_photos)
        path = out / "bundles" / f"deblur-mapped-{kernel}.safetensors"
        bundle = load_pipeline(path, device="cpu")
        assert (bundle.quantize_intermediate, bundle.intermediate_bit_depth) == (True, 16)


def test_stage_order_and_repeats_of_every_sr_x4_branch():
    got = {b.name: (b.stage1, b.stage2, b.stage2_repeats, b.domain) for b in sr_x4().branches}
    assert got == {
        "direct-edsr": (None, "direct-edsr", 1, ""),
        "direct-rcan": (None, "direct-rcan", 1, ""),
        "map1-offshelf-x2x2": ("map1", "offshelf-x2", 2, "bicubic-x4"),
        "map1-offshelf-x4": ("map1", "offshelf-x4", 1, "bicubic-x4"),
        "map1-specialized-x4": ("map1", "specialized-x4", 1, "bicubic-x4"),
        "map2-offshelf-x2": ("map2", "offshelf-x2", 1, "bicubic-x2"),
        "map2-specialized-x2": ("map2", "specialized-x2", 1, "bicubic-x2"),
    }
    scales = {n.name: n.scale for n in sr_x4().networks}
    assert (scales["map1"], scales["map2"], scales["offshelf-x2"], scales["offshelf-x4"]) == (
        1,
        2,
        2,
        4,
    )
    assert (scales["specialized-x4"], scales["specialized-x2"]) == (4, 2)


def test_one_changed_setting_retrains_that_network_and_nothing_upstream(
    tmp_path, monkeypatch, tiny_profile
):
    calls: list[str] = []
    real = train_module.train

    def counting(cfg, **kwargs):
        calls.append(cfg.name)
        return real(cfg, **kwargs)

    monkeypatch.setattr(train_module, "train", counting)
    deg = tmp_path / "deg.yaml"
    save_preset(PRESETS["gaussian-aniso"], deg)
    recipe = sr_x4(degradation=str(deg), test_degradations=(str(deg),))
    recipe = recipe.with_branches(["map2-specialized-x2"])

    def run(profile=tiny_profile) -> list[str]:
        calls.clear()
        run_recipe(recipe, data={}, profile=profile, out=tmp_path / "run", device="cpu", quiet=True)
        return sorted(calls)

    everything = ["map2-deg", "offshelf-x2", "specialized-x2-deg"]
    assert run() == everything
    assert run() == []
    # a stage-2 training setting: only the specialized ×2
    assert run(dataclasses.replace(tiny_profile, specialized_iterations=3)) == [
        "specialized-x2-deg"
    ]
    # a stage-1 training setting: the mapping and what learns from its outputs
    assert run(dataclasses.replace(tiny_profile, mapping_iterations=3)) == [
        "map2-deg",
        "specialized-x2-deg",
    ]
    assert run() == []  # the first networks are still cached
    # the training degradation (same file name, other content): not the off-the-shelf ×2
    save_preset(PRESETS["camera"], deg)
    assert run() == ["map2-deg", "specialized-x2-deg"]
    # the training images: every network
    assert run(dataclasses.replace(tiny_profile, hr_crop=36)) == everything
