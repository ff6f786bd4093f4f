"""The shipped model: its file, checksum and architecture, and `restore` without `--model`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from twostage.cli import main
from twostage.models import preset_spec
from twostage.models.checkpoints import CheckpointError
from twostage.models.shipped import SHIPPED, card, shipped_for, shipped_path
from twostage.ops.degrade import SUITE
from twostage.ops.imageio import read_image, write_image
from twostage.pipeline import load_pipeline

MODEL = SHIPPED["blind-x4"]


@pytest.mark.parametrize("name", list(SHIPPED))
def test_the_file_is_the_one_whose_hash_the_repo_keeps(name: str) -> None:
    model = SHIPPED[name]
    path = shipped_path(model, verify=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model.sha256
    assert path.stat().st_size <= 25e6  # the bound on what the package carries
    assert shipped_path(model) == path and shipped_for(model.scale) is model


@pytest.mark.parametrize("name", list(SHIPPED))
def test_it_has_the_documented_architecture_and_restores_to_size(name: str) -> None:
    model = SHIPPED[name]
    pipe = load_pipeline(shipped_path(model), device="cpu")
    assert pipe.scale == model.scale
    stage2_scale = 2  # both ship a ×2 stage 2; stage 1 makes up the rest of the scale
    assert pipe.stage1_scale * stage2_scale == model.scale
    assert pipe.stage1.spec == preset_spec(model.stages[0], scale=pipe.stage1_scale)
    assert pipe.stage2.spec == preset_spec(model.stages[1], scale=stage2_scale)
    img = skimage.data.astronaut()[100:124, 200:230].astype(np.float64) / 255
    out = pipe.restore(img)
    assert out.shape == (24 * model.scale, 30 * model.scale, 3)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", list(SHIPPED))
def test_the_card_holds_every_suite_entry_at_the_default_strength(name: str) -> None:
    model = SHIPPED[name]
    data = card(model)
    assert data["suite"] == [f"samples-{preset}" for preset in SUITE]
    assert data["scale"] == model.scale and data["strength"] == model.strength
    assert list(data["at_strength"]) == data["suite"]
    assert list(data["detail_at_strength"]) == [f"detail-{preset}" for preset in SUITE]
    margins = list(data["at_strength"].values())
    assert data["suite_mean_margin"] == pytest.approx(np.mean(margins))
    assert data["suite_above"] == sum(m > 0 for m in margins)
    assert data["detail_mean_margin"] == pytest.approx(
        np.mean(list(data["detail_at_strength"].values()))
    )
    assert set(data["table"]) >= set(data["suite"])  # the run's rows at strength 1


def test_a_changed_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    import twostage.models.shipped as shipped

    weights = tmp_path / "weights"
    weights.mkdir()
    data = bytearray(shipped_path(MODEL).read_bytes())
    data[-1] ^= 1
    (weights / MODEL.file).write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "_weights", lambda: weights)
    with pytest.raises(CheckpointError, match="SHA-256"):
        shipped_path(MODEL)


def test_restore_without_model_uses_the_shipped_one(tmp_path: Path, capsys) -> None:
    src = tmp_path / "small.png"
    write_image(src, skimage.data.chelsea()[:20, :28].astype(np.float64) / 255)
    assert main(["restore", str(src), "--out", str(tmp_path / "out")]) == 0
    out, _ = read_image(tmp_path / "out" / "small.png")
    assert out.shape == (80, 112, 3)
    assert "the shipped blind-x4" in capsys.readouterr().err
    # --scale picks the shipped model; one that does not ship is a one-line error, exit 2
    assert main(["restore", str(src), "--out", str(tmp_path / "o2"), "--scale", "2"]) == 2
    assert "no shipped ×2 model" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_models_lists_the_shipped_model_with_its_headline(capsys) -> None:
    assert main(["models"]) == 0
    printed = capsys.readouterr().out
    data = card(MODEL)
    assert "blind-x4" in printed and f"{data['suite_mean_margin']:+.2f} dB" in printed
    assert "rcan-small" in printed  # the presets follow


def _weights_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped weights folder that `twostage models` reads instead of the real one."""
    import shutil

    import twostage.models.shipped as shipped

    weights = tmp_path / "weights"
    shutil.copytree(shipped_path(MODEL).parent, weights)
    monkeypatch.setattr(shipped, "_weights", lambda: weights)
    return weights


@pytest.mark.parametrize("content", [None, "{not json", "{}", "[1, 2]", '{"suite": "x"}'])
def test_models_names_a_missing_or_broken_card_and_still_lists(
    content: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    card_file = _weights_copy(tmp_path, monkeypatch) / "blind-x4.json"
    if content is None:
        card_file.unlink()
    else:
        card_file.write_text(content)
    assert main(["models"]) == 2
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 1 and str(card_file) in err[0]
    assert "blind-x4" in captured.out and "rcan-small" in captured.out


def test_models_marks_truncated_or_missing_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    weights = _weights_copy(tmp_path, monkeypatch) / MODEL.file
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["models"]) == 2
    captured = capsys.readouterr()
    assert "BROKEN" in captured.out and "rcan-small" in captured.out
    err = captured.err.splitlines()
    assert len(err) == 1 and str(weights) in err[0] and "SHA-256" in err[0]
    weights.unlink()
    assert main(["models"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "missing" in err[0] and str(weights) in err[0]


def test_the_shipped_default_strength_applies_by_name_and_by_path(tmp_path: Path) -> None:
    from twostage.restore import open_model

    assert 0.0 <= MODEL.strength <= 1.0
    for model in ("blind-x4", None, shipped_path(MODEL)):
        assert open_model(model, device="cpu").strength == MODEL.strength, model
    copy = tmp_path / "copy.safetensors"  # a bundle without a stored strength: 1, as before
    copy.write_bytes(shipped_path(MODEL).read_bytes())
    assert open_model(copy, device="cpu").strength == 1.0
