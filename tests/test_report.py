"""report.py: means over images and seeds, the paper-style tables, figures and index.html."""

from __future__ import annotations

import csv
import json
import re
import statistics

import numpy as np
import pytest

from twostage.report import (
    Comparison,
    Panel,
    compute_means,
    format_markdown,
    pick_crop,
    write_report,
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
    gt = np.zeros((40, 40, 3), np.float32)
    gt[10:30, 10:30] = np.random.default_rng(0).random((20, 20, 3))
    comp = Comparison("t", "x", (Panel("GT", gt, None), Panel("a", gt * 0.9, 30.0)))
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(
        "iteration,loss,lr,val_psnr,val_ssim,seconds\n"
        "1,0.5,1e-4,,,0.1\n2,0.4,1e-4,20.0,0.5,0.2\n3,0.3,1e-4,,,0.3\n"
    )
    (tmp_path / "out" / "bundles").mkdir(parents=True)
    (tmp_path / "out" / "bundles" / "a.safetensors").write_bytes(b"x")
    out = tmp_path / "out"
    write_report(results, out, comparisons=[comp], curves={"net": metrics}, reading="Hello.")
    assert json.loads((out / "results.json").read_text())["means"] == results["means"]
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) + 2  # per image, then one mean row per branch
    assert [r["image"] for r in table[-2:]] == ["mean", "mean"]
    assert float(table[-2]["psnr"]) == pytest.approx(31.0)
    tex = (out / "results.tex").read_text()
    assert "\\begin{tabular}{lcc}" in tex and "\\textbf{31.000}" in tex
    html = (out / "index.html").read_text()
    for link in re.findall(r"(?:src|href)='([^']+)'", html):
        assert not link.startswith(("http", "/")), link
        assert (out / link).is_file(), link
    assert "figures/compare-t-x.png" in html and "figures/curves-net.png" in html
    assert "Hello." in html and "bundles/a.safetensors" in html


def test_pick_crop_finds_the_detail():
    img = np.full((64, 96, 3), 0.5, np.float32)
    img[32:64, 64:96] = np.random.default_rng(1).random((32, 32, 3))
    top, left, side = pick_crop(img, size=32)
    assert (top, left, side) == (32, 64, 32)
