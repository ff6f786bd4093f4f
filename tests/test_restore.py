"""`twostage restore`: every --model kind, folders, tiling, 16-bit/alpha/gray/EXIF, failures."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from twostage.cli import build_parser, main
from twostage.errors import UserError
from twostage.export import export_onnx
from twostage.models import ModelSpec, build_model
from twostage.models.checkpoints import save_model
from twostage.ops.imageio import read_image, write_image
from twostage.pipeline import Pipeline, restore_image


def _reference(model: torch.nn.Module, rgb_uint8: np.ndarray) -> np.ndarray:
    """The model's output on an 8-bit image, as float [0, 1] (no rounding)."""
    x = torch.from_numpy(rgb_uint8.astype(np.float32).transpose(2, 0, 1) / 255)[None]
    with torch.no_grad():
        y = model(x).clamp(0, 1)
    return y[0].numpy().transpose(1, 2, 0)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(img * 255 + 0.5), 0, 255).astype(np.uint8)


def _basicsr_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """BasicSR's EDSR key names for our 1-block ×2 EDSR, mapped by hand (no mean shift)."""
    names = {
        "head.0": "conv_first",
        "body.0.body.0": "body.0.conv1",
        "body.0.body.2": "body.0.conv2",
        "body.1": "conv_after_body",
        "tail.0.0": "upsample.0",
        "tail.1": "conv_last",
    }
    state = {}
    for key, value in model.state_dict().items():
        layer, kind = key.rsplit(".", 1)
        if layer in ("sub_mean", "add_mean"):
            continue
        state[f"{names[layer]}.{kind}"] = value.clone()
    return state


def _write_model(kind: str, folder: Path, model: torch.nn.Module) -> Path:
    if kind == "native":
        path = folder / "model.safetensors"
        save_model(path, model)
    elif kind == "official":
        path = folder / "model_x2.pt"
        torch.save(model.state_dict(), path)  # the official layout is our state dict
    elif kind == "basicsr":
        path = folder / "net_g.pth"
        decoy = {k: torch.zeros_like(v) for k, v in _basicsr_state(model).items()}
        torch.save({"params": decoy, "params_ema": _basicsr_state(model)}, path)
    elif kind == "bundle":
        path = folder / "bundle.safetensors"
        Pipeline(None, model, name="direct").save_bundle(path, {"branch": "direct"})
    else:  # onnx
        native = folder / "src.safetensors"
        save_model(native, model)
        path = folder / "model.onnx"
        export_onnx(native, path, opset=17)
    return path


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    from skimage import data as skdata

    img = skdata.chelsea()
    y, x = 60 + 7 * seed, 120 + 5 * seed
    return np.ascontiguousarray(img[y : y + 2 * h : 2, x : x + 2 * w : 2])


@pytest.mark.parametrize("kind", ["native", "official", "basicsr", "bundle", "onnx"])
def test_each_model_kind(
    kind: str, tmp_path: Path, tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    model = tiny_edsr(seed=1)
    path = _write_model(kind, tmp_path, model)
    rgb = _photo(12, 16)
    Image.fromarray(rgb).save(tmp_path / "cat.png")
    code = main(
        [
            "restore",
            "--model",
            str(path),
            str(tmp_path / "cat.png"),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--precision",
            "fp32",  # the fp32 reference's exact numbers
        ]
    )
    assert code == 0
    got = np.asarray(Image.open(tmp_path / "out" / "cat.png")).astype(int)
    want = _to_uint8(_reference(model, rgb)).astype(int)
    assert got.shape == (24, 32, 3)
    assert np.abs(got - want).max() <= (1 if kind == "onnx" else 0)


def test_unknown_architecture_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    torch.save({"layers.0.attn.qkv.weight": torch.zeros(3, 3)}, tmp_path / "swin.pth")
    Image.fromarray(_photo(8, 8)).save(tmp_path / "a.png")
    code = main(
        [
            "restore",
            "--model",
            str(tmp_path / "swin.pth"),
            str(tmp_path / "a.png"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "swin.pth" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_folders_suffix_and_tiling(
    tmp_path: Path, tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    model = tiny_edsr(seed=2)
    path = _write_model("native", tmp_path, model)
    src = tmp_path / "photos"
    (src / "trip" / "day1").mkdir(parents=True)
    a, b = _photo(20, 22, 1), _photo(13, 9, 2)
    Image.fromarray(a).save(src / "a.png")
    Image.fromarray(b).save(src / "trip" / "day1" / "b.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "restore",
                "--model",
                str(path),
                str(src),
                "--out",
                str(out),
                "--suffix",
                "_x2",
                "--tile",
                "8",
                "--tile-pad",
                "8",
                "--device",
                "cpu",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a_x2.png",
        "trip/day1/b_x2.png",
    ]
    # EDSR sees 6 pixels around each output: with pad 8 the tiles are exact.
    for img, name in ((a, "a_x2.png"), (b, "trip/day1/b_x2.png")):
        got = np.asarray(Image.open(out / name))
        np.testing.assert_array_equal(got, _to_uint8(_reference(model, img)))

    auto = tmp_path / "auto"
    assert (
        main(
            [
                "restore",
                "--model",
                str(path),
                str(src / "a.png"),
                "--out",
                str(auto),
                "--tile",
                "auto",
                "--device",
                "cpu",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(auto / "a.png")), _to_uint8(_reference(model, a))
    )


def test_no_overwrite_without_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    path = _write_model("native", tmp_path, tiny_edsr())
    Image.fromarray(_photo(8, 8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"keep me")
    args = ["restore", "--model", str(path), str(tmp_path / "a.png"), "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "exists" in captured.err and "--overwrite" in captured.err
    assert (out / "a.png").read_bytes() == b"keep me"
    assert main([*args, "--overwrite"]) == 0
    assert Image.open(out / "a.png").size == (16, 16)


def test_unreadable_file_others_still_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    path = _write_model("native", tmp_path, tiny_edsr())
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_photo(8, 8, 1)).save(src / "a.png")
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    Image.fromarray(_photo(8, 8, 2)).save(src / "c.png")
    out = tmp_path / "out"
    assert main(["restore", "--model", str(path), str(src), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "b.png" in line]
    assert len(errors) == 1 and errors[0].startswith("error:")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert "1 failed" in captured.out


def test_sixteen_bit_in_sixteen_bit_out(
    tmp_path: Path, tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    model = tiny_edsr(seed=3)
    path = _write_model("native", tmp_path, model)
    rng = np.random.default_rng(0)
    img16 = rng.integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    write_image(tmp_path / "deep.png", img16, bit_depth=16)
    assert (
        main(
            [
                "restore",
                "--model",
                str(path),
                str(tmp_path / "deep.png"),
                "--out",
                str(tmp_path / "out"),
                "--precision",
                "fp32",  # bf16 activations hold about 8 bits: 16-bit work wants fp32
            ]
        )
        == 0
    )
    got, info = read_image(tmp_path / "out" / "deep.png")
    assert info.bit_depth == 16 and got.shape == (20, 24, 3)
    x = torch.from_numpy(img16.astype(np.float32).transpose(2, 0, 1) / 65535)[None]
    with torch.no_grad():
        want = model(x).clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    assert np.abs(got - want).max() <= 1 / 65535 + 1e-6  # 8-bit would be off by up to 1/510


def test_alpha_kept_or_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    path = _write_model("native", tmp_path, tiny_edsr())
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[..., :3] = _photo(12, 16)
    rgba[:, :8, 3] = 0
    rgba[:, 8:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    assert (
        main(
            [
                "restore",
                "--model",
                str(path),
                str(tmp_path / "logo.png"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    out = Image.open(tmp_path / "out" / "logo.png")
    assert out.mode == "RGBA" and out.size == (32, 24)
    alpha = np.asarray(out)[..., 3].astype(int)
    # Bicubic ×2 of a step: flat far from the edge (kernel reach 2 input px = 4 output px).
    assert (alpha[:, :12] == 0).all() and (alpha[:, 20:] == 255).all()
    assert 0 < alpha[0, 15] < 255 and 0 < alpha[0, 16] < 255

    assert (
        main(
            [
                "restore",
                "--model",
                str(path),
                str(tmp_path / "logo.png"),
                "--out",
                str(tmp_path / "jpg"),
                "--ext",
                "jpg",
            ]
        )
        == 0
    )
    assert "alpha" in capsys.readouterr().err
    assert Image.open(tmp_path / "jpg" / "logo.jpg").mode == "RGB"


def test_gray_in_gray_out(tmp_path: Path, tiny_edsr: Callable[..., torch.nn.Module]) -> None:
    model = tiny_edsr(seed=4)
    path = _write_model("native", tmp_path, model)
    gray = _photo(10, 14)[..., 1]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert (
        main(
            [
                "restore",
                "--model",
                str(path),
                str(tmp_path / "g.png"),
                "--out",
                str(tmp_path / "out"),
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    out = Image.open(tmp_path / "out" / "g.png")
    assert out.mode == "L" and out.size == (28, 20)
    want = _reference(model, np.repeat(gray[..., None], 3, axis=2)).mean(axis=2)
    assert np.abs(np.asarray(out).astype(int) - _to_uint8(want).astype(int)).max() == 0


def test_exif_orientation_applied(
    tmp_path: Path, tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    path = _write_model("native", tmp_path, tiny_edsr())
    img = Image.fromarray(_photo(12, 20))  # stored 20 wide, 12 high
    exif = img.getexif()
    exif[0x0112] = 6  # display rotated 90° clockwise: 12 wide, 20 high
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert (
        main(
            [
                "restore",
                "--model",
                str(path),
                str(tmp_path / "phone.jpg"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "out" / "phone.png").size == (24, 40)


def test_interrupted_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    path = _write_model("native", tmp_path, tiny_edsr())
    Image.fromarray(_photo(8, 8)).save(tmp_path / "a.png")
    out = tmp_path / "out"

    def interrupted_save(self, fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    assert (
        main(["restore", "--model", str(path), str(tmp_path / "a.png"), "--out", str(out)]) == 130
    )
    assert not out.exists() or not list(out.rglob("*"))


def test_gray_with_alpha_is_restored_as_gray_with_alpha(
    tmp_path: Path, tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    path = _write_model("native", tmp_path, tiny_edsr())
    la = np.zeros((12, 16, 2), np.uint8)
    la[..., 0] = _photo(12, 16)[..., 1]
    la[:, 8:, 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "mark.png")
    out = tmp_path / "out"
    assert (
        main(["restore", "--model", str(path), str(tmp_path / "mark.png"), "--out", str(out)]) == 0
    )
    with Image.open(out / "mark.png") as im:
        assert im.mode == "LA" and im.size == (32, 24)
        alpha = np.asarray(im)[..., 1]
    assert (alpha[:, :12] == 0).all() and (alpha[:, 20:] == 255).all()


def test_nan_in_the_input_is_blamed_on_the_input_not_the_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    import tifffile

    path = _write_model("native", tmp_path, tiny_edsr())
    values = np.full((12, 16, 3), 0.5, np.float32)
    values[3, 4, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", values, photometric="rgb")
    assert (
        main(
            [
                "restore",
                "--model",
                str(path),
                str(tmp_path / "nan.tif"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "nan.tif: holds NaN or Inf sample values" in err and "diverged" not in err
    assert not (tmp_path / "o" / "nan.png").exists()


def test_a_suffix_that_makes_a_name_too_long_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    model = tmp_path / "m.safetensors"
    save_model(model, tiny_edsr())
    photo = tmp_path / "a.png"
    Image.new("RGB", (12, 10), (90, 120, 30)).save(photo)
    out = tmp_path / "out"
    args = ["restore", "--model", str(model), str(photo), "--out", str(out)]
    assert main([*args, "--suffix", "x" * 260]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(out / "a") in err[0] and "255" in err[0]
    assert not out.exists()
    # a name just under the limit is written: its temporary name is cut to fit as well
    assert main([*args, "--suffix", "x" * 245]) == 0
    assert [p.name for p in out.iterdir()] == [f"a{'x' * 245}.png"]


def test_an_output_too_wide_for_webp_fails_that_file_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    model = tmp_path / "m.safetensors"
    save_model(model, tiny_edsr())
    wide, small = tmp_path / "wide.png", tmp_path / "small.png"
    Image.new("RGB", (8200, 4), (90, 120, 30)).save(wide)  # ×2: 16400 > WebP's 16383
    Image.new("RGB", (12, 10), (90, 120, 30)).save(small)
    out = tmp_path / "out"
    args = ["restore", "--model", str(model), str(wide), str(small), "--out", str(out)]
    assert main([*args, "--ext", "webp", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert len(errors) == 1 and str(out / "wide.webp") in errors[0] and "16383" in errors[0]
    assert [p.name for p in out.iterdir()] == ["small.webp"]
    assert "restored 1 image(s)" in captured.out and "1 failed" in captured.out


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A gray PNG whose header says width×height but whose data is one row: a few hundred
    bytes that no test decodes (a crafted file, or a huge mostly-constant photo)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" + bytes(width))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def _x4_model(folder: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="edsr", scale=4, n_feats=8, n_resblocks=1)).eval()
    return _write_model("native", folder, model)


def test_an_output_over_the_limit_is_refused_from_the_header_and_others_still_written(
    tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    model = _x4_model(tmp_path)
    _png_claiming(tmp_path / "big.png", 9000, 9000)  # 81 MP: under the input limit
    Image.fromarray(_photo(6, 8)).save(tmp_path / "small.png")
    out = tmp_path / "out"
    code = main(
        [
            "restore",
            "--model",
            str(model),
            str(tmp_path / "big.png"),
            str(tmp_path / "small.png"),
            "--out",
            str(out),
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 2 and len(err) == 1
    assert "big.png" in err[0] and "36000×36000 (1296 MP)" in err[0]
    assert "over the limit of 400 MP (--max-output-pixels raises it)" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["small.png"]


def test_max_output_pixels_sets_the_output_limit(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = _x4_model(tmp_path)
    Image.fromarray(_photo(6, 8)).save(tmp_path / "a.png")  # ×4: 32×24 = 768 pixels
    args = ["restore", "--model", str(model), str(tmp_path / "a.png")]
    assert main([*args, "--out", str(tmp_path / "o1"), "--max-output-pixels", "767"]) == 2
    assert "32×24 (0.000768 MP), over the limit of 0.000767 MP" in capsys.readouterr().err
    assert not (tmp_path / "o1" / "a.png").exists()
    assert main([*args, "--out", str(tmp_path / "o2"), "--max-output-pixels", "768"]) == 0
    assert Image.open(tmp_path / "o2" / "a.png").size == (32, 24)


# -------------------------- inputs are never replaced; leftovers are cleaned; tiles and options


def test_restore_overwrite_never_replaces_the_input(
    tmp_path: Path,
    photo_file: Callable[..., Path],
    edsr_file: Path,
    run_cli: Callable[..., tuple[int, str]],
) -> None:
    d = tmp_path / "d"
    good = photo_file(d)
    before = good.read_bytes()
    args = ["restore", "--model", str(edsr_file), str(good), "--out", str(d)]
    code, err = run_cli(*args, "--overwrite", "--device", "cpu")
    assert code == 2 and f"{good} is the input" in err and err.count("\n") == 1
    assert good.read_bytes() == before


@pytest.mark.parametrize("suffix", ["../../x", "/x", "a/b", "..", "x\\y"])
def test_restore_suffix_may_not_move_the_output(
    tmp_path: Path,
    suffix: str,
    photo_file: Callable[..., Path],
    edsr_file: Path,
    run_cli: Callable[..., tuple[int, str]],
) -> None:
    good = photo_file(tmp_path / "in")
    out = tmp_path / "a" / "b" / "out"
    code, err = run_cli(
        "restore",
        "--model",
        str(edsr_file),
        str(good),
        "--out",
        str(out),
        f"--suffix={suffix}",
    )
    assert code == 2 and "--suffix" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["good.png"]


def test_a_sigkilled_write_is_cleaned_by_the_next_restore(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    photo_file: Callable[..., Path],
    edsr_file: Path,
) -> None:
    out = tmp_path / "out"
    code = (
        "import os, signal, sys\n"
        "from twostage.ops.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half an image')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(out / "good.png")], check=False)
    assert [p.name for p in out.iterdir() if p.name.startswith(".good.")]
    good = photo_file(tmp_path / "in")
    assert main(["restore", "--model", str(edsr_file), str(good), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]
    capsys.readouterr()


def test_tiles_below_the_minimum_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    photo_file: Callable[..., Path],
    edsr_file: Path,
) -> None:
    photo = photo_file(tmp_path / "in", size=(32, 40))
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "restore",
                "--model",
                str(edsr_file),
                str(photo),
                "--out",
                str(tmp_path / "o"),
                "--tile",
                "1",
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "a tile of at least 8" in err and err.count("\n") == 1
    with pytest.raises(UserError, match="at least 8"):
        restore_image(lambda p: p, np.zeros((32, 40, 3), np.float32), scale=1, tile=1, tile_pad=0)


def test_restore_tiles_automatically_and_documents_every_option() -> None:
    parser = build_parser()
    args = parser.parse_args(["restore", "--model", "m", "x.png", "--out", "o"])
    assert args.tile == "auto"
    restore = parser._subparsers._group_actions[0].choices["restore"]  # type: ignore[union-attr]
    undocumented = [a.dest for a in restore._actions if not a.help]
    assert undocumented == []


# --- --strength, --stage2, --tta ---------------------------------------------------------------


def _two_stage_bundle(folder: Path, *, strength: float = 1.0) -> tuple[Path, Pipeline]:
    torch.manual_seed(3)
    stages = [build_model(ModelSpec(arch="edsr", scale=2, n_feats=8, n_resblocks=1)) for _ in "12"]
    pipe = Pipeline(*stages, name="tiny-map2", strength=strength).eval()
    path = folder / "two.safetensors"
    pipe.save_bundle(path)
    return path, pipe


def _restore_cli(model: Path | None, image: Path, out: Path, *options: str) -> int:
    chosen = ["--model", str(model)] if model is not None else []
    return main(["restore", *chosen, str(image), "--out", str(out), "--device", "cpu",
                 "--precision", "fp32", *options])  # fmt: skip


def test_restore_strength_and_tta_give_what_the_pipeline_gives(tmp_path: Path) -> None:
    path, pipe = _two_stage_bundle(tmp_path, strength=0.75)
    rgb = _photo(12, 16)
    Image.fromarray(rgb).save(tmp_path / "cat.png")
    img = rgb.astype(np.float32) / 255
    runs = {"default": (), "s0": ("--strength", "0"), "tta": ("--strength", "0.5", "--tta")}
    wants = {
        "default": pipe.restore(img, tile=None, strength=0.75),
        "s0": pipe.restore(img, tile=None, strength=0.0),
        "tta": pipe.restore(img, tile=None, strength=0.5, tta=True),
    }
    for name, options in runs.items():
        assert _restore_cli(path, tmp_path / "cat.png", tmp_path / name, *options) == 0
        got = np.asarray(Image.open(tmp_path / name / "cat.png")).astype(int)
        assert np.abs(got - _to_uint8(wants[name]).astype(int)).max() <= 1, name
    default = np.asarray(Image.open(tmp_path / "default" / "cat.png")).astype(int)
    assert np.abs(default - _to_uint8(wants["s0"]).astype(int)).max() > 1  # 0.75 is not 0


def test_a_strength_for_a_single_network_or_out_of_range_is_one_line_exit_2(
    tmp_path: Path, tiny_edsr: Callable[..., torch.nn.Module], capsys
) -> None:  # type: ignore[no-untyped-def]
    single = _write_model("native", tmp_path, tiny_edsr())
    Image.fromarray(_photo(8, 8)).save(tmp_path / "a.png")
    assert _restore_cli(single, tmp_path / "a.png", tmp_path / "out", "--strength", "0.5") == 2
    err = capsys.readouterr().err
    assert "single network" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "a.png").exists()
    onnx = _write_model("onnx", tmp_path, tiny_edsr())
    assert _restore_cli(onnx, tmp_path / "a.png", tmp_path / "out", "--strength", "1") == 2
    err = capsys.readouterr().err
    assert "no strength control" in err and err.count("\n") == 1
    for bad in ("1.5", "-1", "nan", "half"):
        with pytest.raises(SystemExit) as exit_info:
            _restore_cli(single, tmp_path / "a.png", tmp_path / "out", "--strength", bad)
        assert exit_info.value.code == 2
        assert "expected a number from 0 to 1" in capsys.readouterr().err


def test_stage2_puts_the_shipped_stage1_in_front_of_an_official_x2_checkpoint(
    tmp_path: Path,
) -> None:
    from twostage.models.checkpoints import save_official
    from twostage.restore import open_model

    torch.manual_seed(4)
    spec = ModelSpec(arch="rcan", scale=2, n_feats=8, n_resblocks=1, n_resgroups=1, reduction=4)
    tiny = build_model(spec).eval()
    save_official(tmp_path / "RCAN_BIX2.pt", tiny)
    rgb = _photo(10, 12)
    Image.fromarray(rgb).save(tmp_path / "cat.png")
    assert _restore_cli(None, tmp_path / "cat.png", tmp_path / "out", "--strength", "1",
                        "--stage2", str(tmp_path / "RCAN_BIX2.pt")) == 0  # fmt: skip
    got = np.asarray(Image.open(tmp_path / "out" / "cat.png")).astype(int)
    shipped = open_model("blind-x4", device="cpu", precision="fp32")
    want = Pipeline(shipped.stage1, tiny).restore(rgb.astype(np.float32) / 255, tile=None)
    assert got.shape == (40, 48, 3)
    assert np.abs(got - _to_uint8(want).astype(int)).max() <= 1
    plain = shipped.restore(rgb.astype(np.float32) / 255, tile=None, strength=1)
    assert np.abs(got - _to_uint8(plain).astype(int)).max() > 1  # not the shipped stage 2


def test_stage2_of_another_scale_or_behind_a_single_network_is_refused(
    tmp_path: Path, tiny_edsr: Callable[..., torch.nn.Module], capsys
) -> None:  # type: ignore[no-untyped-def]
    from twostage.models.checkpoints import save_official

    save_official(tmp_path / "EDSR_x4.pt", tiny_edsr(scale=4))
    Image.fromarray(_photo(8, 8)).save(tmp_path / "a.png")
    bundle, _ = _two_stage_bundle(tmp_path)
    single = _write_model("native", tmp_path, tiny_edsr())
    cases = [
        (
            bundle,
            tmp_path / "EDSR_x4.pt",
            "EDSR_x4.pt: a ×4 network; the stage 2 it replaces is ×2",
        ),
        (single, tmp_path / "EDSR_x4.pt", "has no stage 1 to put in front of it"),
        (bundle, tmp_path / "missing.pt", "--stage2: model file not found"),
        (bundle, bundle, "two.safetensors: a pipeline bundle; give one network's checkpoint"),
    ]
    for model, stage2, message in cases:
        assert _restore_cli(model, tmp_path / "a.png", tmp_path / "out", "--stage2",
                            str(stage2)) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "a.png").exists()
