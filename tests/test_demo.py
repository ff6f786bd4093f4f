"""`twostage demo --quick`: the README's first command, end to end (about 1–2 minutes)."""

from __future__ import annotations

import json

import pytest

from twostage.cli import main


@pytest.mark.slow
def test_demo_quick_writes_the_report_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["in_distribution"] == "samples-gaussian-aniso"
    assert results["test_sets"] == ["samples-gaussian-aniso", "samples-camera"]
    assert results["branches"] == [
        "interp-bicubic",
        "direct-rcan",
        "map2-offshelf-x2",
        "map2-specialized-x2",
    ]
    for name in (
        "results.csv",
        "results.md",
        "results.tex",
        "index.html",
        "bundles/map2-specialized-x2.safetensors",
    ):
        assert (out / name).is_file(), name
    # the printed table has one line per branch with both test sets' PSNR/SSIM
    for branch in results["branches"]:
        line = next(ln for ln in printed.splitlines() if ln.startswith(branch + " "))
        means = [m for m in results["means"] if m["branch"] == branch]
        for m in means:
            assert f"{m['psnr']:.2f} / {m['ssim']:.3f}" in line
    assert str(out / "index.html") in printed
    assert str(out / "bundles" / "map2-specialized-x2.safetensors") in printed
    assert "On samples-camera" in printed  # the plain-language reading
