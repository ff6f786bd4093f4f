"""Stage-wise diagnostics (results.json's "stages"): each stage of every two-stage branch on
its own job, recomputed by hand from the run's files; direct branches have none; the report
shows them and says which stage loses more."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from twostage import stages
from twostage.models.checkpoints import load_model
from twostage.ops.degrade import derive_seed, intermediate
from twostage.ops.imageio import read_image
from twostage.ops.metrics import psnr
from twostage.ops.resize import imresize
from twostage.runner import run_recipe


def _net(out: Path, prefix: str) -> torch.nn.Module:
    (path,) = (out / "networks").glob(f"{prefix}-*/model.safetensors")
    return load_model(path).eval()


def _apply(nets: list[torch.nn.Module], x: np.ndarray) -> np.ndarray:
    """Each network in turn, the image rounded to 8 bits between two (as on disk)."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        for i, net in enumerate(nets):
            t = net(torch.floor(t.clamp(0, 1) * 255 + 0.5) / 255 if i else t)
    return t.clamp(0, 1)[0].numpy().transpose(1, 2, 0)


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory, tiny_profile) -> tuple[Path, dict]:
    """A tiny sr-x4 run with a direct branch, a ×2 map and a ×1 map (in front of x2x2)."""
    root = tmp_path_factory.mktemp("stages")
    recipe = root / "staged.yaml"
    recipe.write_text(
        "base: sr-x4\ndegradations: [gaussian-aniso]\ntest_degradations: [gaussian-aniso]\n"
        "branches: [direct-rcan, map2-offshelf-x2, map1-offshelf-x2x2]\ndetail_sets: true\n"
    )
    out = root / "run"
    results = run_recipe(recipe, data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    return out, results


def test_every_two_stage_branch_has_stage_rows_on_every_test_set(staged_run) -> None:
    _, results = staged_run
    staged = results["stages"]
    assert staged["branches"] == ["map1-offshelf-x2x2", "map2-offshelf-x2"]  # not direct-rcan
    assert staged["test_sets"] == results["test_sets"]
    assert results["test_sets"] == ["samples-gaussian-aniso", "detail-gaussian-aniso"]
    pairs = {(r["branch"], r["test_set"]) for r in staged["rows"]}
    assert pairs == set(itertools.product(staged["branches"], results["test_sets"]))
    assert {(m["branch"], m["test_set"]) for m in staged["means"]} == pairs
    whole = {(r["branch"], r["test_set"], r["image"]): r["psnr"] for r in results["rows"]}
    for row in staged["rows"]:
        assert set(stages.KEYS) <= set(row) and row["seed"] == 0
        assert row["pipeline_psnr"] == whole[(row["branch"], row["test_set"], row["image"])]
        bicubic = whole[("interp-bicubic", row["test_set"], row["image"])]
        assert row["pipeline_bicubic_psnr"] == bicubic


def test_stage_numbers_recomputed_by_hand_from_the_mapped_pngs(
    staged_run, tiny_test_photos
) -> None:
    out, results = staged_run
    ((hr, x),) = tiny_test_photos("gaussian-aniso", 4)
    rows = {
        r["branch"]: r
        for r in results["stages"]["rows"]
        if r["test_set"] == "samples-gaussian-aniso"
    }
    name = rows["map2-offshelf-x2"]["image"]
    b2 = intermediate("bicubic-x2", hr, seed=derive_seed(0, f"bicubic-x2:{name}"))
    b4 = intermediate("bicubic-x4", hr, seed=derive_seed(0, f"bicubic-x4:{name}"))
    (png,) = (out / "mapped").glob(f"map2-*/samples-gaussian-aniso/{name}.png")
    mapped = read_image(png)[0]
    row = rows["map2-offshelf-x2"]
    # the rows' border of 4 HR pixels is 2 pixels of the ↓2 intermediate
    assert row["stage1_psnr"] == psnr(mapped, b2, crop_border=2)
    assert row["stage1_bicubic_psnr"] == psnr(np.clip(imresize(x, 2.0), 0, 1), b2, crop_border=2)
    offshelf = _net(out, "offshelf-x2")
    want = psnr(_apply([offshelf], b2), hr, crop_border=4)
    assert row["stage2_psnr"] == pytest.approx(want, abs=1e-4)
    up = np.clip(imresize(b2, 2.0), 0, 1)
    assert row["stage2_bicubic_psnr"] == psnr(up, hr, crop_border=4)
    # the ×1 map: bicubic on its job is the input itself; stage 2 is the ×2 applied twice
    row = rows["map1-offshelf-x2x2"]
    (png,) = (out / "mapped").glob(f"map1-*/samples-gaussian-aniso/{name}.png")
    assert row["stage1_psnr"] == psnr(read_image(png)[0], b4, crop_border=1)
    assert row["stage1_bicubic_psnr"] == psnr(x, b4, crop_border=1)
    want = psnr(_apply([offshelf, offshelf], b4), hr, crop_border=4)
    assert row["stage2_psnr"] == pytest.approx(want, abs=1e-4)
    up = np.clip(imresize(b4, 4.0), 0, 1)
    assert row["stage2_bicubic_psnr"] == psnr(up, hr, crop_border=4)


def test_results_md_and_index_html_show_the_stage_table(staged_run) -> None:
    out, results = staged_run
    mean = next(
        m
        for m in results["stages"]["means"]
        if (m["branch"], m["test_set"]) == ("map2-offshelf-x2", "samples-gaussian-aniso")
    )
    margin = mean["stage1_psnr"] - mean["stage1_bicubic_psnr"]
    md = (out / "results.md").read_text()
    assert "## Stage by stage" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| `map2-offshelf-x2` | samples-g"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    bicubic = mean["stage1_bicubic_psnr"]
    assert cells[2:4] == [f"{mean['stage1_psnr']:.2f} ({margin:+.2f})", f"{bicubic:.2f}"]
    page = (out / "index.html").read_text()
    assert "id=stages" in page
    cell = re.search(
        r"<td[^>]*data-branch='map2-offshelf-x2' data-test='samples-gaussian-aniso' "
        r"data-stage='stage2_psnr'>([^<]*)</td>",
        page,
    )
    assert cell is not None
    ceiling = mean["stage2_psnr"]
    assert cell.group(1) == f"{ceiling:.2f} {ceiling - mean['stage2_bicubic_psnr']:+.2f}"
    assert "Stage by stage, map2-offshelf-x2" in page  # the reading, at the top


def test_a_run_without_a_two_stage_branch_has_no_stages(tmp_path, tiny_profile) -> None:
    recipe = tmp_path / "direct.yaml"
    recipe.write_text("base: sr-x4\ntest_degradations: [gaussian-aniso]\nbranches: [direct-rcan]\n")
    out = tmp_path / "run"
    results = run_recipe(recipe, data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    assert "stages" not in results
    assert "Stage by stage" not in (out / "results.md").read_text()
    assert "id=stages" not in (out / "index.html").read_text()


def _mean(branch: str, stage1: float, stage2: float, pipeline: float) -> dict:
    """A mean whose bicubic scores are 30 dB on every job."""
    return {
        "branch": branch,
        "test_set": "t",
        "stage1_psnr": 30.0 + stage1,
        "stage1_bicubic_psnr": 30.0,
        "stage2_psnr": 30.0 + stage2,
        "stage2_bicubic_psnr": 30.0,
        "pipeline_psnr": pipeline,
        "pipeline_bicubic_psnr": 30.0,
    }


def test_the_reading_names_the_stage_that_loses_more() -> None:
    staged = {
        "branches": ["weak-first", "weak-second"],
        "test_sets": ["t"],
        "crop_border": 4,
        "means": [_mean("weak-first", -1.26, 1.35, 29.0), _mean("weak-second", 0.5, -0.2, 29.5)],
    }
    text = stages.reading(staged)
    first, second = text.split("Stage by stage, ")[1:]
    assert first.startswith("weak-first") and "stage 1 is -1.26 dB" in first
    assert "stage 2 is +1.35 dB" in first and "ceiling +2.35 dB over" in first
    assert first.rstrip().endswith("stage 1 loses more.")
    assert second.startswith("weak-second") and second.rstrip().endswith("stage 2 loses more.")
    md = stages.markdown(staged)
    assert "| `weak-first` | t | 28.74 (-1.26) | 30.00 | 31.35 (+1.35) | 30.00 |" in md
