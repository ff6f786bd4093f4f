"""`twostage evaluate` through the CLI: pairing, numbers, table, JSON, and every error path."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from twostage.cli import main
from twostage.evaluate import evaluate_arrays, format_evaluation, strip_suffixes


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _noisy(gt: np.ndarray, seed: int, amount: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(gt.astype(int) + rng.integers(-amount, amount + 1, gt.shape), 0, 255).astype(
        np.uint8
    )


def _dataset(tmp_path, n=2, size=(24, 20)):
    rng = np.random.default_rng(0)
    gts, preds = [], []
    suffixes = ["x4", "_SR", "_x4", "x4_SR"]
    for i in range(n):
        gt = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        pred = _noisy(gt, seed=i + 1)
        _save(tmp_path / "gt" / f"{i + 1:04d}.png", gt)
        _save(tmp_path / "pred" / f"{i + 1:04d}{suffixes[i % 4]}.png", pred)
        gts.append(gt)
        preds.append(pred)
    return gts, preds


def _run(capsys, *args):
    code = main(["evaluate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_strip_suffixes():
    # The shared rule of data/datasets.py, which evaluate pairs with.
    cases = {
        "0001x4": "0001",
        "Canon_001_LR4": "Canon_001",
        "Canon_001_HR": "Canon_001",
        "0801_SR": "0801",
        "img_x4": "img",
        "0001x4_SR": "0001",
        "babyx4": "baby",
        "x4": "x4",
        "LR4": "LR4",
    }
    for stem, key in cases.items():
        assert strip_suffixes(stem) == key, stem


def test_folders_table_and_json(tmp_path, capsys, skimage_ssim):
    gts, preds = _dataset(tmp_path, n=2)
    code, out, err = _run(
        capsys,
        "--pred",
        tmp_path / "pred",
        "--gt",
        tmp_path / "gt",
        "--crop-border",
        2,
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0, err
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r["name"] for r in data["images"]] == ["0001", "0002"]
    expected = [
        peak_signal_noise_ratio(g[2:-2, 2:-2], p[2:-2, 2:-2], data_range=255)
        for g, p in zip(gts, preds)
    ]
    expected_ssim = [skimage_ssim(p[2:-2, 2:-2], g[2:-2, 2:-2]) for g, p in zip(gts, preds)]
    for row, e, s in zip(data["images"], expected, expected_ssim):
        assert row["psnr"] == pytest.approx(e, abs=1e-6)
        assert row["ssim"] == pytest.approx(s, abs=1e-6)
    assert data["mean"]["psnr"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert data["crop_border"] == 2 and data["y_channel"] is False
    lines = out.strip().splitlines()
    assert lines[0].split() == ["image", "PSNR", "SSIM"]
    assert lines[1].startswith("0001") and f"{expected[0]:.4f}" in lines[1]
    assert lines[3].startswith("mean (2)") and f"{np.mean(expected):.4f}" in lines[3]
    assert "RGB" in out


def test_y_channel_and_single_files(tmp_path, capsys):
    gts, preds = _dataset(tmp_path, n=1)
    code, out, _ = _run(
        capsys,
        "--pred",
        tmp_path / "pred" / "0001x4.png",
        "--gt",
        tmp_path / "gt" / "0001.png",
        "--y-channel",
        "--json",
        tmp_path / "y.json",
    )
    assert code == 0
    y = lambda im: 16 + im.astype(np.float64) @ [65.481, 128.553, 24.966] / 255  # noqa: E731
    row = json.loads((tmp_path / "y.json").read_text())["images"][0]
    assert row["psnr"] == pytest.approx(
        peak_signal_noise_ratio(y(gts[0]), y(preds[0]), data_range=255), abs=1e-6
    )
    assert "Y (BT.601)" in out


def test_one_identical_pair_keeps_the_mean_psnr_finite_at_the_100_db_ceiling(
    tmp_path, capsys, strict_json
):
    rng = np.random.default_rng(1)
    gt_a, gt_b = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    pred_b = _noisy(gt_b, seed=2)
    _save(tmp_path / "gt" / "a_HR.png", gt_a)
    _save(tmp_path / "pred" / "a_SR.png", gt_a)
    _save(tmp_path / "gt" / "b_HR.png", gt_b)
    _save(tmp_path / "pred" / "b_SR.png", pred_b)
    code, out, _ = _run(
        capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", tmp_path / "r.json"
    )
    assert code == 0 and "inf" not in out
    data = strict_json((tmp_path / "r.json").read_text())
    psnr_b = peak_signal_noise_ratio(gt_b, pred_b, data_range=255)
    assert [r["psnr"] for r in data["images"]] == [100.0, pytest.approx(psnr_b, abs=1e-9)]
    assert data["mean"]["psnr"] == pytest.approx((100.0 + psnr_b) / 2, abs=1e-9)
    assert data["images"][0]["ssim"] == pytest.approx(1.0)


def _assert_failed(code, err, json_path, *needles):
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("twostage: error: ")
    for needle in needles:
        assert needle in err
    assert not json_path.exists()
    leftovers = [p for p in json_path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_prediction_without_ground_truth(tmp_path, capsys):
    _dataset(tmp_path, n=2)
    _save(tmp_path / "pred" / "0999x4.png", np.zeros((24, 20, 3), dtype=np.uint8))
    code, _, err = _run(
        capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", tmp_path / "r.json"
    )
    _assert_failed(code, err, tmp_path / "r.json", "no ground truth", "0999x4.png")


def test_unequal_sizes_name_both_files(tmp_path, capsys):
    _dataset(tmp_path, n=2)
    _save(tmp_path / "pred" / "0002_SR.png", np.zeros((12, 10, 3), dtype=np.uint8))
    code, _, err = _run(
        capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", tmp_path / "r.json"
    )
    _assert_failed(code, err, tmp_path / "r.json", "0002_SR.png", "0002.png", "10x12", "20x24")


def test_unreadable_prediction(tmp_path, capsys):
    _dataset(tmp_path, n=2)
    (tmp_path / "pred" / "0002_SR.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    code, _, err = _run(
        capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", tmp_path / "r.json"
    )
    _assert_failed(code, err, tmp_path / "r.json", "cannot read image", "0002_SR.png")


def test_missing_folder_and_empty_folder(tmp_path, capsys):
    _dataset(tmp_path, n=1)
    code, _, err = _run(
        capsys, "--pred", tmp_path / "nope", "--gt", tmp_path / "gt", "--json", tmp_path / "r.json"
    )
    _assert_failed(code, err, tmp_path / "r.json", "--pred", "nope")
    (tmp_path / "empty").mkdir()
    code, _, err = _run(
        capsys,
        "--pred",
        tmp_path / "pred",
        "--gt",
        tmp_path / "empty",
        "--json",
        tmp_path / "r.json",
    )
    _assert_failed(code, err, tmp_path / "r.json", "--gt", "no images found")


def test_ambiguous_pairing(tmp_path, capsys):
    _dataset(tmp_path, n=1)
    _save(tmp_path / "pred" / "0001_SR.png", np.zeros((24, 20, 3), dtype=np.uint8))
    code, _, err = _run(
        capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", tmp_path / "r.json"
    )
    _assert_failed(code, err, tmp_path / "r.json", "both pair as '0001'")


def test_error_keeps_an_existing_json(tmp_path, capsys):
    _dataset(tmp_path, n=2)
    (tmp_path / "r.json").write_text("old")
    _save(tmp_path / "pred" / "0002_SR.png", np.zeros((12, 10, 3), dtype=np.uint8))
    code, _, err = _run(
        capsys,
        "--pred",
        tmp_path / "pred",
        "--gt",
        tmp_path / "gt",
        "--json",
        tmp_path / "r.json",
        "--overwrite",
    )
    assert code == 2 and "0002_SR.png" in err and (tmp_path / "r.json").read_text() == "old"


def test_lpips_unavailable_is_a_clean_error(tmp_path, capsys, monkeypatch):
    _dataset(tmp_path, n=1)
    monkeypatch.setitem(sys.modules, "lpips", None)
    code, _, err = _run(
        capsys,
        "--pred",
        tmp_path / "pred",
        "--gt",
        tmp_path / "gt",
        "--lpips",
        "alex",
        "--json",
        tmp_path / "r.json",
    )
    _assert_failed(code, err, tmp_path / "r.json", "pip install torchvision lpips==0.1.4")


def test_bad_lpips_name_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path), "--lpips", "squeeze"])
    assert exc.value.code == 2


def test_progress_bar_only_for_many_images(tmp_path, capsys):
    _dataset(tmp_path / "few", n=2, size=(12, 12))
    few = tmp_path / "few"
    code, _, err = _run(capsys, "--pred", few / "pred", "--gt", few / "gt")
    assert code == 0 and "evaluate" not in err
    _dataset(tmp_path / "many", n=21, size=(12, 12))
    code, out, err = _run(
        capsys, "--pred", tmp_path / "many" / "pred", "--gt", tmp_path / "many" / "gt"
    )
    assert code == 0 and "mean (21)" in out
    assert re.fullmatch(r"evaluated 21 images \(\d+\.\d s\)\n", err)  # in a log: one line


def test_evaluate_arrays_with_lpips_models():
    gt = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pred = _noisy(gt, seed=3)
    calls = []

    def fake_lpips(a, b):
        calls.append((a.shape, b.shape))
        return 0.125

    row = evaluate_arrays(
        pred, gt, crop_border=1, y_channel=False, lpips_models={"lpips_alex": fake_lpips}
    )
    assert row["lpips_alex"] == 0.125 and calls == [((16, 16, 3), (16, 16, 3))]
    assert row["psnr"] == pytest.approx(
        peak_signal_noise_ratio(gt[1:-1, 1:-1], pred[1:-1, 1:-1], data_range=255), abs=1e-6
    )
    table = format_evaluation(
        {"images": [{"name": "a", **row}], "mean": dict(row), "crop_border": 1, "y_channel": False}
    )
    assert table.splitlines()[0].split() == ["image", "PSNR", "SSIM", "LPIPS-alex"]
    assert "0.1250" in table and not math.isnan(row["ssim"])


def test_json_never_writes_over_an_input_image(tmp_path, capsys):
    """--json naming a ground-truth or prediction image (directly, through a symlink or a hard
    link) is refused with or without --overwrite; the image is untouched."""
    _dataset(tmp_path, n=2)
    gt_img, pred_img = tmp_path / "gt" / "0001.png", tmp_path / "pred" / "0002_SR.png"
    before = {p: p.read_bytes() for p in (gt_img, pred_img)}
    (tmp_path / "link.json").symlink_to(gt_img)
    os.link(pred_img, tmp_path / "hard.json")
    for target in (gt_img, pred_img, tmp_path / "link.json", tmp_path / "hard.json"):
        for extra in ([], ["--overwrite"]):
            code, _, err = _run(
                capsys,
                "--pred",
                tmp_path / "pred",
                "--gt",
                tmp_path / "gt",
                "--json",
                target,
                *extra,
            )
            assert code == 2 and "--json" in err and len(err.splitlines()) == 1, (target, err)
    code, _, err = _run(
        capsys, "--pred", pred_img, "--gt", gt_img, "--json", pred_img, "--overwrite"
    )
    assert code == 2 and "is the input" in err
    assert {p: p.read_bytes() for p in before} == before


def test_json_replaces_an_existing_file_only_with_overwrite(tmp_path, capsys):
    _dataset(tmp_path, n=2)
    (tmp_path / "r.json").write_text("mine")
    args = ["--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", tmp_path / "r.json"]
    code, _, err = _run(capsys, *args)
    assert code == 2 and "exists (--overwrite" in err
    assert (tmp_path / "r.json").read_text() == "mine"
    code, _, _ = _run(capsys, *args, "--overwrite")
    assert code == 0 and len(json.loads((tmp_path / "r.json").read_text())["images"]) == 2


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "utf-8:strict"}, {"LC_ALL": "C"}])
def test_a_file_name_that_is_not_utf8_prints_under_a_strict_stdout(tmp_path, env) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    from pathlib import Path

    folder = os.fsencode(tmp_path)
    for side in (b"pred", b"gt"):
        os.mkdir(os.path.join(folder, side))
        Image.new("RGB", (16, 16), (90, 120, 30)).save(os.path.join(folder, side, b"x\xff.png"))
    src = Path(__file__).resolve().parents[1] / "src"
    environ = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_ALL", "LC_CTYPE")}
    result = subprocess.run(
        [sys.executable, "-m", "twostage", "evaluate", "--pred", "pred", "--gt", "gt"],
        cwd=tmp_path,
        env={**environ, **env, "PYTHONPATH": str(src)},
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"x\\udcff" in result.stdout and result.stderr == b""


# ----------------------------------------- unwritable --json, ground truth without a prediction


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only folders")
def test_json_in_a_read_only_folder_is_refused(
    tmp_path: Path, photo_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str]]
) -> None:
    photo = photo_file(tmp_path / "in")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    code, err = run_cli(
        "evaluate", "--pred", str(photo), "--gt", str(photo), "--json", str(ro / "r.json")
    )
    assert code == 2 and "is not writable" in err


def test_ground_truth_without_prediction_is_an_error_unless_allow_missing(
    tmp_path: Path, photo_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str]]
) -> None:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name in ("a.png", "b.png", "c.png"):
        photo_file(gt, name)
    photo_file(pred, "a.png")
    code, err = run_cli("evaluate", "--pred", str(pred), "--gt", str(gt))
    assert code == 2 and "2 of 3 ground-truth image(s) have no prediction" in err
    assert "--allow-missing" in err and err.count("\n") == 1
    code, err = run_cli("evaluate", "--pred", str(pred), "--gt", str(gt), "--allow-missing")
    assert code == 0 and err.startswith("twostage: warning: 2 of 3") and "cover the other 1" in err
