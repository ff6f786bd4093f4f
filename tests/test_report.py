"""report.py and report_html.py: means over images and seeds, the paper-style tables, figures,
the viewer's images and index.html."""

from __future__ import annotations

import csv
import json
import re
import statistics

import numpy as np
import pytest

from twostage.ops.imageio import read_image, to_uint8
from twostage.recipes import Claim
from twostage.report import (
    Comparison,
    Panel,
    compute_means,
    describe,
    format_markdown,
    pick_crop,
    write_report,
)
from twostage.report_html import (
    VIEW_SIDE,
    format_page,
    generalization_html,
    save_views,
    write_page,
)


def _rows() -> list[dict]:
    rows = []
    # two seeds × two images × two branches on one test set, simple known numbers
    values = {
        ("a", 0): (30.0, 32.0),
        ("a", 1): (31.0, 33.0),
        ("b", 0): (28.0, 28.0),
        ("b", 1): (29.0, 27.0),
    }
    for (branch, seed), (v1, v2) in values.items():
        for image, v in (("x", v1), ("y", v2)):
            rows.append(
                {
                    "branch": branch,
                    "test_set": "t",
                    "image": image,
                    "seed": seed,
                    "psnr": v,
                    "ssim": v / 100,
                }
            )
    return rows


def _results(rows: list[dict], seeds: list[int] | None = None) -> dict:
    res = {
        "recipe": "r",
        "profile": "tiny",
        "seed": 0,
        "in_distribution": "t",
        "test_sets": ["t"],
        "branches": ["a", "b"],
        "rows": rows,
        "means": compute_means(rows),
    }
    if seeds:
        res["seeds"] = seeds
    return res


def test_means_over_images_then_seeds():
    means = {m["branch"]: m for m in compute_means(_rows())}
    # branch a: seed means 31 and 32 → 31.5, std of (31, 32)
    assert means["a"]["psnr"] == pytest.approx(31.5)
    assert means["a"]["psnr_std"] == pytest.approx(statistics.stdev([31.0, 32.0]))
    assert means["b"]["psnr"] == pytest.approx(28.0)
    assert means["b"]["psnr_std"] == pytest.approx(0.0)
    assert "lpips_alex" not in means["a"]


def test_single_seed_has_no_std():
    rows = [r for r in _rows() if r["seed"] == 0]
    means = {m["branch"]: m for m in compute_means(rows)}
    assert means["a"]["psnr"] == pytest.approx(31.0)
    assert "psnr_std" not in means["a"]


def test_markdown_table_bolds_the_best_per_row():
    text = format_markdown(_results(_rows(), [0, 1]))
    psnr_line = next(line for line in text.splitlines() if line.startswith("| PSNR"))
    assert "**31.500 ± 0.707**" in psnr_line
    assert "28.000 ± 0.000" in psnr_line and "**28.000" not in psnr_line
    assert "(in-distribution)" in text


def test_write_report_files(tmp_path):
    rows = [r for r in _rows() if r["seed"] == 0]
    results = _results(rows)
    out = tmp_path / "out"
    write_report(results, out)
    assert json.loads((out / "results.json").read_text())["means"] == results["means"]
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) + 2  # per image, then one mean row per branch
    assert [r["image"] for r in table[-2:]] == ["mean", "mean"]
    assert float(table[-2]["psnr"]) == pytest.approx(31.0)
    tex = (out / "results.tex").read_text()
    assert "\\begin{tabular}{lcc}" in tex and "\\textbf{31.000}" in tex
    assert not (out / "index.html").exists()  # the page is report_html's


def test_write_page(tmp_path):
    results = _results([r for r in _rows() if r["seed"] == 0])
    gt = np.zeros((40, 40, 3), np.float32)
    gt[10:30, 10:30] = np.random.default_rng(0).random((20, 20, 3))
    comp = Comparison("t", "x", (Panel("GT", gt, None), Panel("a", gt * 0.9, 30.0)))
    net = tmp_path / "out" / "networks" / "net-123"
    net.mkdir(parents=True)
    (net / "metrics.csv").write_text(
        "iteration,loss,lr,val_psnr,val_ssim,seconds\n"
        "1,0.5,1e-4,,,0.1\n2,0.4,1e-4,20.0,0.5,0.2\n3,0.3,1e-4,,,12.34\n"
    )
    (net / "config.yaml").write_text("name: net <&>\n")
    (tmp_path / "out" / "bundles").mkdir(parents=True)
    (tmp_path / "out" / "bundles" / "a.safetensors").write_bytes(b"x")
    out = tmp_path / "out"
    write_report(results, out)
    views = [save_views(comp, out)]
    write_page(results, out, strips=[comp], views=views, networks={"net": net}, reading="Hi.")
    page = (out / "index.html").read_text()
    for link in re.findall(r"(?:src|href)='([^']+)'", page):
        assert link.startswith("data:") or (out / link).is_file(), link
        assert not link.startswith(("http", "/")), link
    assert "figures/compare-t-x.png" in page and "figures/curves-net.png" in page
    assert "<figcaption>t — image x</figcaption>" in page
    assert "3 iterations · 12.3 s · last loss 0.3 · best validation PSNR 20.00 dB" in page
    assert "name: net &lt;&amp;&gt;" in page  # the config, escaped
    assert "Hi." in page and "bundles/a.safetensors" in page
    # the per-image table: one cell per branch × image × metric, the best of a row in bold
    assert "<td class=best data-metric='psnr' data-branch='a' data-test-set='t' " in page
    assert "data-image='y' data-seed='0'>32.000</td>" in page
    # the viewer's data: every view of the image, with its file and PSNR
    data = re.search(r"id=cmp-data>(.*?)</script>", page).group(1)
    (view_set,) = json.loads(data)["sets"]
    assert [v["label"] for v in view_set["views"]] == ["GT", "a"]
    assert view_set["views"][1] == {"label": "a", "src": "figures/views/t/x/a.webp", "psnr": 30.0}
    total = sum(p.stat().st_size for p in (out / "figures").rglob("*") if p.is_file())
    size = float(re.search(r"This page and its images: ([0-9.]+) MB", page).group(1))
    assert size == pytest.approx((total + len(page.encode())) / 1e6, abs=0.01)


def test_views_are_lossless_and_large_images_cropped(tmp_path):
    rng = np.random.default_rng(2)
    small = rng.random((40, 48, 3)).astype(np.float32)
    (view,) = save_views(Comparison("t", "s", (Panel("GT", small, None),)), tmp_path).views
    assert np.array_equal(read_image(tmp_path / view.src)[0], to_uint8(small) / np.float32(255))
    big = np.full((VIEW_SIDE + 96, VIEW_SIDE * 2, 3), 0.5, np.float32)
    big[-VIEW_SIDE:, -VIEW_SIDE:] = rng.random((VIEW_SIDE, VIEW_SIDE, 3))  # the detail
    views = save_views(Comparison("t", "b", (Panel("GT", big, None),)), tmp_path)
    assert (views.width, views.height) == (VIEW_SIDE, VIEW_SIDE)
    shown = read_image(tmp_path / views.views[0].src)[0]
    assert np.array_equal(shown, to_uint8(big[-VIEW_SIDE:, -VIEW_SIDE:]) / np.float32(255))


def test_generalization_matrix_is_rendered_when_present():
    results = _results([r for r in _rows() if r["seed"] == 0])
    assert generalization_html(results, figure=None) == ""
    results["generalization"] = {
        "test_sets": ["bicubic", "jpeg40"],
        "branches": ["interp-bicubic", "a"],
        "psnr": [[25.0, 24.0], [26.5, 23.0]],
        "ssim": [[0.7, 0.6], [0.75, 0.55]],
        "psnr_margin": [[0.0, 0.0], [1.5, -1.0]],
        "mean_psnr_margin": [0.0, 0.25],
    }
    page = generalization_html(results, figure="figures/generalization.png")
    assert "<th>jpeg40</th>" in page and "<th>mean margin</th>" in page
    # a margin of +1.5 (the largest) is the strongest green; −1.0 is red, two-thirds as strong
    assert (
        "style='background:rgba(46,160,67,0.72)' data-branch='a' data-test='bicubic'>26.50 +1.50"
        in page
    )
    assert (
        "style='background:rgba(215,58,73,0.52)' data-branch='a' data-test='jpeg40'>23.00 -1.00"
        in page
    )
    assert "data-test='mean'>+0.25</td>" in page
    assert "<img src='figures/generalization.png'" in page


def test_pick_crop_finds_the_detail():
    img = np.full((64, 96, 3), 0.5, np.float32)
    img[32:64, 64:96] = np.random.default_rng(1).random((32, 32, 3))
    top, left, side = pick_crop(img, size=32)
    assert (top, left, side) == (32, 64, 32)


def test_per_image_tables_with_seeds_have_a_row_per_seed():
    results = _results(_rows(), [0, 1])
    page = format_page(results, sections=[], reading="", bundles=[])
    assert "<th>seed</th>" in page
    for row in results["rows"]:
        cell = (
            f"data-metric='psnr' data-branch='{row['branch']}' data-test-set='t' "
            f"data-image='{row['image']}' data-seed='{row['seed']}'>{row['psnr']:.3f}</td>"
        )
        assert cell in page, cell
    assert (
        "<td class=best data-branch='a' data-test-set='t' data-metric='psnr'>31.500 ± 0.707</td>"
        in page
    )


def test_results_json_is_strict_json_with_non_finite_numbers_as_null(tmp_path, strict_json):
    rows = [r for r in _rows() if r["seed"] == 0]
    rows[0] = {**rows[0], "psnr": float("inf")}
    rows[1] = {**rows[1], "ssim": float("nan")}
    results = _results(rows)
    results["timing"] = {"per_branch": [float("-inf"), 0.5], "note": "x"}
    write_report(results, tmp_path)
    data = strict_json((tmp_path / "results.json").read_text())
    assert data["rows"][0]["psnr"] is None and data["rows"][1]["ssim"] is None
    assert data["rows"][2]["psnr"] == rows[2]["psnr"]
    assert data["timing"] == {"per_branch": [None, 0.5], "note": "x"}
    means = {m["branch"]: m for m in data["means"]}
    assert means["a"]["psnr"] is None and means["b"]["psnr"] == pytest.approx(28.0)


def _claim_results(profile: str, *, suite: bool = False) -> dict:
    branches = ["interp-bicubic", "specialized-x2x2", "offshelf-x2x2"]
    psnr = {"interp-bicubic": 24.0, "specialized-x2x2": 25.0, "offshelf-x2x2": 24.2}
    results = {
        "profile": profile,
        "test_sets": ["bicubic"],
        "in_distribution": "bicubic",
        "branches": branches,
        "means": [{"branch": b, "test_set": "bicubic", "psnr": v} for b, v in psnr.items()],
    }
    if suite:
        results["test_sets"].append("jpeg40")
        results["generalization"] = {
            "test_sets": ["bicubic", "jpeg40"],
            "suite": ["jpeg40"],
            "branches": branches,
            "psnr_margin": [[0.0, 0.0], [1.0, 0.2], [0.2, 0.4]],
            "mean_psnr_margin": [0.0, 0.2, 0.4],
        }
    return results


def test_the_reading_checks_the_recipes_claim_and_names_its_branches():
    """describe(): the claim comes from the recipe (any two branches), not from fixed names."""
    claim = Claim(ours="specialized-x2x2", rival="offshelf-x2x2")
    text = describe(_claim_results("tiny"), claim)
    assert (
        "The recipe's claim is that specialized-x2x2 beats offshelf-x2x2, most of all on unseen "
        "degradations; here specialized-x2x2 minus offshelf-x2x2 is +0.80 dB on bicubic, so the "
        "claim holds on every test set at this (tiny, CPU-sized) scale." in text
    )
    assert "claim" not in describe(_claim_results("tiny"))  # no claim, no verdict


@pytest.mark.parametrize("profile", ["paper", "ship"])
def test_only_the_cpu_and_tiny_profiles_are_read_as_tiny_cpu_sized(profile: str):
    claim = Claim(ours="specialized-x2x2", rival="offshelf-x2x2")
    text = describe(_claim_results(profile), claim)
    assert "so the claim holds on every test set." in text and "CPU-sized" not in text
    assert "CPU-sized" in describe(_claim_results("cpu"), claim)


def test_the_suite_reading_follows_the_claim_and_states_no_fixed_target():
    claim = Claim(ours="specialized-x2x2", rival="offshelf-x2x2")
    text = describe(_claim_results("paper", suite=True), claim)
    assert "specialized-x2x2 is above bicubic interpolation on 1 of 1" in text
    assert "its mean margin over it is +0.20 dB." in text
    assert "Against offshelf-x2x2 it is ahead on 0 of 1 (behind on jpeg40)" in text
    assert "so the claim does not hold across the suite on average" in text
    assert "target" not in text and "map2" not in text and "direct-rcan" not in text
