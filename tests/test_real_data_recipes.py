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
import pytest
import yaml
from safetensors.numpy import load_file

from twostage.cli import main
from twostage.config import PROFILES
from twostage.errors import UserError
from twostage.ops.degrade import SUITE
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


def _table2(tmp_path: Path) -> Path:
    """The paper's Table 2 recipe (configs/paper/sr-x4.yaml) with the tiny profile's networks."""
    path = tmp_path / "table2.yaml"
    path.write_text("base: sr-x4\ndegradations: [unknown]\ntest_degradations: [unknown]\n")
    return path


def test_table2_trains_on_div2k_unknown_and_tests_on_realsr(tmp_path: Path) -> None:
    _fake_div2k(tmp_path / "DIV2K")
    _fake_realsr(tmp_path / "RealSR")
    out = tmp_path / "run"
    results = run_recipe(
        _table2(tmp_path),
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


def _photos(root: Path, n: int) -> Path:
    """`n` photos in nested folders (jpg and png), 40×44 crops of one embedded photo."""
    from twostage.data.samples import load_samples

    img = load_samples("train")[0][1]
    for i in range(n):
        sub = root / ("a" if i % 2 else "b") / ("deep" if i % 3 == 0 else "")
        suffix = ".jpg" if i % 4 == 0 else ".png"
        write_image(sub / f"p{i:02d}{suffix}", img[8 * i : 8 * i + 40, 4 * i : 4 * i + 44] / 255)
    return root


def _demo_on(tmp_path: Path, data: dict | list) -> dict:
    return run_recipe(
        "configs/recipes/demo.yaml",
        data=data,
        profile=TINY,
        out=tmp_path / "run",
        device="cpu",
        quiet=True,
        branches=["map2-offshelf-x2"],
    )


def _train_data(out: Path, label: str) -> dict:
    (folder,) = (out / "networks").glob(f"{label}-*")
    return yaml.safe_load((folder / "config.yaml").read_text())["data"]["train"]


def test_the_demo_recipe_on_photos_trains_the_family_per_patch_and_tests_the_suite(
    tmp_path: Path,
) -> None:
    root = _photos(tmp_path / "mine", 11)
    results = _demo_on(tmp_path, [("photos", root)])
    suite = [f"photos-{d}" for d in SUITE]
    assert results["test_sets"] == ["photos-realistic-mix", "photos-gaussian-aniso", *suite]
    # every 10th photo sorted by path validates (a/deep/p03, a/deep/p09, a/p01, a/p05, a/p07,
    # b/deep/p00, b/deep/p06, b/p02, b/p04, b/p08, b/p10): b/p08; the other 10 train
    assert {r["image"] for r in results["rows"]} == {"b_p08"}
    data = _train_data(tmp_path / "run", "map2-realistic-mix")
    assert data["kind"] == "photos" and data["roots"] == [str(root)]
    assert data["per_patch"] is True and data["preset"] == "realistic-mix"


def test_the_demo_recipe_on_div2k_degrades_its_hr_as_the_recipe_says(tmp_path: Path) -> None:
    _fake_div2k(tmp_path / "DIV2K")
    results = _demo_on(tmp_path, {"div2k": tmp_path / "DIV2K"})
    assert results["test_sets"][:2] == ["div2k-realistic-mix", "div2k-gaussian-aniso"]
    assert len(results["test_sets"]) == 2 + len(SUITE)
    data = _train_data(tmp_path / "run", "map2-realistic-mix")
    assert data["kind"] == "div2k" and data["track"] is None and data["per_patch"] is True
    assert "unknown" not in " ".join(results["networks_trained"])


def test_a_track_the_data_does_not_have_is_refused_not_substituted(tmp_path: Path) -> None:
    root = _photos(tmp_path / "mine", 3)
    with pytest.raises(UserError, match=r"trains on 'unknown' \(div2k's LR files\).*photos"):
        run_recipe(_table2(tmp_path), data=[("photos", root)], profile=TINY, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before anything is written
    with pytest.raises(UserError, match="tests on 'unknown', which no --data provides"):
        recipe = tmp_path / "t.yaml"
        recipe.write_text("base: sr-x4\ntest_degradations: [bicubic, unknown]\n")
        run_recipe(recipe, data=[("photos", root)], profile=TINY, out=tmp_path / "r")


@pytest.mark.parametrize("kind", ["photos", "div2k"])
def test_a_runner_network_on_real_data_retrains_bit_exactly_from_its_config(
    tmp_path: Path, kind: str
) -> None:
    if kind == "photos":
        data = [("photos", _photos(tmp_path / "mine", 4))]
    else:
        _fake_div2k(tmp_path / "DIV2K")
        data = [("div2k", tmp_path / "DIV2K")]
    _demo_on(tmp_path, data)
    for label in ("map2-realistic-mix", "offshelf-x2"):
        (folder,) = (tmp_path / "run" / "networks").glob(f"{label}-*")
        again = tmp_path / f"again-{label}"
        assert main(["train", str(folder / "config.yaml"), "--out", str(again)]) == 0
        a = load_file(str(folder / "model.safetensors"))
        b = load_file(str(again / "model.safetensors"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys) -> None:
    root = _photos(tmp_path / "mine", 4)
    out = tmp_path / "run"
    args = ["run", "configs/recipes/demo.yaml", "--profile", "tiny", "--dry-run"]
    assert main([*args, "--data", f"photos={root}", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"training data: photos, 2 images (kind photos, {root}, split train)" in said
    assert "test set photos-noise20: 1 images" in said
    assert "network map2-realistic-mix: rcan-tiny ×2" in said
    assert "estimated training time" in said
    assert not out.exists()


def test_mapping_init_offshelf_names_the_offshelf_weights_in_map2s_config(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "base: sr-x4\ndegradations: [realistic-mix]\ntest_degradations: [realistic-mix]\n"
        "branches: [map2-offshelf-x2]\nmapping_init: offshelf\n"
    )
    run_recipe(recipe, profile=TINY, out=tmp_path / "run", device="cpu", quiet=True)
    networks = tmp_path / "run" / "networks"
    (offshelf,) = networks.glob("offshelf-x2-*")
    (map2,) = networks.glob("map2-realistic-mix-*")
    init = yaml.safe_load((map2 / "config.yaml").read_text())["model"]["init"]
    assert Path(init) == offshelf / "model.safetensors"
