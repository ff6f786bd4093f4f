"""ONNX export: dynamic size, the onnxruntime check, no file left on failure, restore via ORT."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from twostage import export as export_module
from twostage.cli import main
from twostage.errors import UserError
from twostage.export import export_onnx
from twostage.models import ModelSpec, build_model
from twostage.pipeline import OnnxPipeline, Pipeline, load_pipeline


def _bundle(path: Path) -> Pipeline:
    torch.manual_seed(0)
    s1 = build_model(
        ModelSpec(arch="rcan", scale=2, n_feats=8, n_resblocks=1, n_resgroups=1, reduction=4)
    )
    s2 = build_model(ModelSpec(arch="edsr", scale=2, n_feats=8, n_resblocks=1))
    pipe = Pipeline(s1, s2, name="map2-offshelf-x2").eval()
    pipe.save_bundle(path, {"branch": "map2-offshelf-x2"})
    return pipe


def test_round_trip_dynamic_size(tmp_path: Path) -> None:
    pipe = _bundle(tmp_path / "p.safetensors")
    onnx_path = tmp_path / "out" / "p.onnx"
    diff = export_onnx(tmp_path / "p.safetensors", onnx_path, opset=17)
    assert 0.0 <= diff <= 1e-4
    assert sorted(p.name for p in onnx_path.parent.iterdir()) == ["p.onnx"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["scale"] == "4"
    for h, w in ((20, 28), (9, 13)):  # neither the traced nor the checked size
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = pipe(x).numpy()
        assert got.shape == (1, 3, 4 * h, 4 * w)
        np.testing.assert_allclose(got, want, atol=1e-4)

    loaded = load_pipeline(onnx_path, device="cpu")
    assert isinstance(loaded, OnnxPipeline) and loaded.scale == 4
    img = np.random.default_rng(1).random((21, 19, 3), dtype=np.float32)
    np.testing.assert_allclose(
        loaded.restore(img, tile=8, tile_pad=16),
        pipe.restore(img, tile=None, device="cpu"),
        atol=1e-4,
    )


def test_cli_export_then_restore_matches_bundle(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    _bundle(tmp_path / "p.safetensors")
    assert (
        main(
            [
                "export",
                "--model",
                str(tmp_path / "p.safetensors"),
                "--onnx",
                str(tmp_path / "p.onnx"),
                "--opset",
                "17",
            ]
        )
        == 0
    )
    assert "max abs diff" in capsys.readouterr().out
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (14, 18, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    for name, model in (("torch", "p.safetensors"), ("onnx", "p.onnx")):
        assert (
            main(
                [
                    "restore",
                    "--model",
                    str(tmp_path / model),
                    str(tmp_path / "a.png"),
                    "--out",
                    str(tmp_path / name),
                    "--device",
                    "cpu",
                    "--precision",
                    "fp32",  # as the ONNX graph runs
                ]
            )
            == 0
        )
    a = np.asarray(Image.open(tmp_path / "torch" / "a.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "onnx" / "a.png")).astype(int)
    assert a.shape == (56, 72, 3)
    assert np.abs(a - b).max() <= 1


def test_failed_check_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bundle(tmp_path / "p.safetensors")
    real = export_module._onnxruntime_output
    monkeypatch.setattr(
        export_module, "_onnxruntime_output", lambda model, x: real(model, x) + 1e-3
    )
    with pytest.raises(UserError, match="ONNX check failed"):
        export_onnx(tmp_path / "p.safetensors", tmp_path / "e" / "p.onnx", opset=17)
    assert not list((tmp_path / "e").iterdir())


def test_rounding_flips_are_tolerated_but_not_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One intermediate value rounding the other way moves a few outputs; that is no export
    error (the unrounded graph is checked instead), while a broad mismatch still is."""
    _bundle(tmp_path / "p.safetensors")
    real = export_module._onnxruntime_output
    calls: list[int] = []

    def one_flip(model, x):  # type: ignore[no-untyped-def]
        out = real(model, x)
        calls.append(1)
        if len(calls) == 1:  # the written (rounded) graph
            out[0, 0, 5, 7] += 1 / 255
        return out

    monkeypatch.setattr(export_module, "_onnxruntime_output", one_flip)
    diff = export_onnx(tmp_path / "p.safetensors", tmp_path / "ok.onnx", opset=17)
    assert len(calls) == 2 and diff <= 1e-4 and (tmp_path / "ok.onnx").is_file()

    def many_flips(model, x):  # type: ignore[no-untyped-def]
        out = real(model, x)
        out[0, :, ::4, :] += 1 / 255
        return out

    monkeypatch.setattr(export_module, "_onnxruntime_output", many_flips)
    with pytest.raises(UserError, match="differ"):
        export_onnx(tmp_path / "p.safetensors", tmp_path / "bad.onnx", opset=17)
    assert not (tmp_path / "bad.onnx").exists()


def test_onnx_model_cannot_be_exported_again(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert (
        main(["export", "--model", str(tmp_path / "m.onnx"), "--onnx", str(tmp_path / "n.onnx")])
        == 2
    )


def test_export_refuses_to_write_over_the_model_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """--onnx naming the --model file (as given, by a symlink, a hard link or a `..` path) is
    refused with or without --overwrite, and the weights stay as they were."""
    model = tmp_path / "m.safetensors"
    _bundle(model)
    before = model.read_bytes()
    (tmp_path / "link.onnx").symlink_to(model)
    (tmp_path / "sub").mkdir()
    os.link(model, tmp_path / "hard.onnx")
    names = [
        model,
        tmp_path / "link.onnx",
        tmp_path / "hard.onnx",
        tmp_path / "sub/../m.safetensors",
    ]
    for onnx in names:
        for extra in ([], ["--overwrite"]):
            code = main(["export", "--model", str(model), "--onnx", str(onnx), *extra])
            err = capsys.readouterr().err
            assert code == 2 and "--onnx" in err and len(err.splitlines()) == 1, (onnx, err)
            assert model.read_bytes() == before


def test_export_refuses_an_existing_file_unless_overwrite(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "m.safetensors"
    _bundle(model)
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    args = ["export", "--model", str(model), "--onnx", str(other)]
    assert main(args) == 2
    assert "exists (--overwrite" in capsys.readouterr().err
    assert other.read_text() == "mine"
    assert main([*args, "--overwrite"]) == 0
    assert ort.InferenceSession(str(other), providers=["CPUExecutionProvider"]) is not None


def test_an_onnx_name_over_255_bytes_is_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _bundle(tmp_path / "p.safetensors")
    onnx = tmp_path / f"{'m' * 300}.onnx"
    assert main(["export", "--model", str(tmp_path / "p.safetensors"), "--onnx", str(onnx)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--onnx" in err[0] and str(onnx) in err[0]


# ------------------------------------------------------------------------- an unsupported opset


def test_unsupported_opset_is_one_line_and_writes_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], edsr_file: Path
) -> None:
    assert main(["export", "--model", str(edsr_file), "--onnx", str(tmp_path / "m.onnx"),
                 "--opset", "3"]) == 2  # fmt: skip
    out, err = capfd.readouterr()
    assert out == "" and err == "twostage: error: --opset 3: expected 7 to 23\n"
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_a_bundle_whose_default_strength_is_not_one(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    pipe = _bundle(tmp_path / "full.safetensors")
    Pipeline(pipe.stage1, pipe.stage2, strength=0.5).save_bundle(tmp_path / "half.safetensors")
    code = main(["export", "--model", str(tmp_path / "half.safetensors"),
                 "--onnx", str(tmp_path / "half.onnx")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "default strength is 0.5, and ONNX export carries no strength" in err
    assert not (tmp_path / "half.onnx").exists()
