"""`twostage demo --quick`: the README's quick-start command, end to end, on the tiny profile (the
real --quick profile is exercised by `make demo` and BENCHMARKS.md): the table it prints, and
numbers recomputed by hand and through the bundle it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twostage import config
from twostage.cli import main
from twostage.ops.degrade import SUITE
from twostage.ops.metrics import psnr
from twostage.ops.resize import imresize
from twostage.pipeline import load_pipeline


def test_demo_quick_writes_the_report_and_prints_the_table(
    tmp_path, capsys, monkeypatch, tiny_profile, tiny_test_photos
):
    monkeypatch.setattr(config, "QUICK", tiny_profile)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    suite = [f"samples-{name}" for name in SUITE]
    assert results["in_distribution"] == "samples-realistic-mix"  # blind: trained on the mix
    assert results["test_sets"] == ["samples-realistic-mix", "samples-gaussian-aniso", *suite]
    gen = results["generalization"]
    assert gen["suite"] == suite and gen["branches"] == results["branches"]
    assert (out / "figures" / "generalization.png").is_file()
    assert results["branches"] == [
        "interp-bicubic",
        "direct-rcan",
        "map2-offshelf-x2",
        "map2-specialized-x2",
    ]
    for name in ("results.csv", "results.md", "results.tex", "index.html"):
        assert (out / name).is_file(), name
    # the printed table: one line per branch with PSNR/SSIM of the two non-suite test sets
    for branch in results["branches"]:
        line = next(ln for ln in printed.splitlines() if ln.startswith(branch + " "))
        means = [m for m in results["means"] if m["branch"] == branch]
        assert len(means) == 2 + len(SUITE)
        for m in means[:2]:
            assert f"{m['psnr']:.2f} / {m['ssim']:.3f}" in line
    # then the suite: a line per suite entry with every learned branch's margin over bicubic
    for c, test_set in enumerate(results["test_sets"]):
        line = next(ln for ln in printed.splitlines() if ln.startswith(test_set + " "))
        margins = [gen["psnr_margin"][i][c] for i in range(1, len(gen["branches"]))]
        assert line.split()[-len(margins) :] == [f"{v:+.2f}" for v in margins]
    mean_line = next(ln for ln in printed.splitlines() if ln.startswith("suite mean"))
    assert f"{gen['mean_psnr_margin'][-1]:+.2f}" in mean_line
    bundle = out / "bundles" / "map2-specialized-x2.safetensors"
    assert str(out / "index.html") in printed and str(bundle) in printed
    # the plain-language reading (wrapped at 96 columns) says where the claim held on the suite
    words = " ".join(printed.split())
    assert "On samples-gaussian-aniso" in words
    assert "On the held-out suite (9 degradations never trained on)" in words
    assert "Against direct-rcan it is ahead on" in words
    # the numbers: interp-bicubic by hand, the two-stage branch through its bundle
    pipe = load_pipeline(bundle, device="cpu")
    for degradation in ("realistic-mix", "gaussian-aniso", "noise20", "webp40"):
        test_set = f"samples-{degradation}"
        ((hr, x),) = tiny_test_photos(degradation, 4)
        rows = {r["branch"]: r for r in results["rows"] if r["test_set"] == test_set}
        up = np.clip(imresize(x, 4.0), 0, 1)
        assert rows["interp-bicubic"]["psnr"] == psnr(up, hr, crop_border=4)
        got = psnr(pipe.restore(x, device="cpu"), hr, crop_border=4)
        assert rows["map2-specialized-x2"]["psnr"] == pytest.approx(got, abs=1e-4)
