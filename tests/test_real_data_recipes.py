"""`twostage run … --data div2k=ROOT --data realsr=ROOT`: the recipes on real-data layouts.

Tiny fake DIV2K and RealSR V3 trees with the real names stand in for the datasets: the paper's
generalization matrix (train on DIV2K unknown, test on its valid split and on RealSR Canon and
Nikon) must be wired end to end, with the data's own LR images as the inputs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from twostage.config import PROFILES
from twostage.ops.imageio import write_image
from twostage.runner import run_recipe

TINY = dataclasses.replace(
    PROFILES["tiny"], iterations=2, hr_crop=None, train_images=2, test_images=2
)


def _img(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def _fake_div2k(root: Path) -> None:
    for split, ids in (("train", (1, 2)), ("valid", (801, 802))):
        for i in ids:
            write_image(root / f"DIV2K_{split}_HR" / f"{i:04d}.png", _img(64, 48, i))
            write_image(
                root / f"DIV2K_{split}_LR_unknown" / "X4" / f"{i:04d}x4.png", _img(16, 12, 1000 + i)
            )


def _fake_realsr(root: Path) -> None:
    for cam in ("Canon", "Nikon"):
        for split in ("Train", "Test"):
            for i in (1, 2):
                folder = root / cam / split / "4"
                write_image(folder / f"{cam}_{i:03d}_HR.png", _img(64, 48, i + 10))
                write_image(folder / f"{cam}_{i:03d}_LR4.png", _img(16, 12, i + 20))


def test_sr_x4_trains_on_div2k_unknown_and_tests_on_realsr(tmp_path: Path) -> None:
    _fake_div2k(tmp_path / "DIV2K")
    _fake_realsr(tmp_path / "RealSR")
    out = tmp_path / "run"
    results = run_recipe(
        "sr-x4",
        data={"div2k": tmp_path / "DIV2K", "realsr": tmp_path / "RealSR"},
        profile=TINY,
        out=out,
        device="cpu",
        quiet=True,
        branches=["direct-rcan", "map2-specialized-x2"],
    )
    assert results["test_sets"] == ["div2k-unknown", "realsr-canon", "realsr-nikon"]
    assert results["in_distribution"] == "div2k-unknown"
    saved = json.loads((out / "results.json").read_text())
    images = {
        (r["test_set"], r["image"]) for r in saved["rows"] if r["branch"] == "map2-specialized-x2"
    }
    assert images == {
        ("div2k-unknown", "0801"),
        ("div2k-unknown", "0802"),
        ("realsr-canon", "Canon_001"),
        ("realsr-canon", "Canon_002"),
        ("realsr-nikon", "Nikon_001"),
        ("realsr-nikon", "Nikon_002"),
    }
    # The networks learned from DIV2K's own LR track, not from a synthetic preset.
    trained = " ".join(results["networks_trained"])
    assert "direct-rcan-unknown" in trained and "map2-unknown" in trained
    assert (out / "bundles" / "map2-specialized-x2.safetensors").is_file()


def test_deblur_degrades_div2k_hr_with_the_blur_presets(tmp_path: Path) -> None:
    _fake_div2k(tmp_path / "DIV2K")
    results = run_recipe(
        "deblur",
        data={"div2k": tmp_path / "DIV2K"},
        profile=TINY,
        out=tmp_path / "run",
        device="cpu",
        quiet=True,
        branches=["deblur-direct", "deblur-mapped"],
    )
    assert results["test_sets"] == ["div2k-blur7", "div2k-blur11"]
    names = {r["image"] for r in results["rows"]}
    assert names == {"0801", "0802"}
