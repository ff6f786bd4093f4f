"""Pipeline: stage composition, intermediate rounding, tiling, tile="auto", bundles."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from skimage import data as skdata

from twostage import pipeline as pipeline_module
from twostage.errors import UserError
from twostage.models import ModelSpec, build_model
from twostage.models.checkpoints import CheckpointError
from twostage.pipeline import (
    OnnxPipeline,
    Pipeline,
    activation_floats_per_pixel,
    auto_tile,
    load_pipeline,
    restore_image,
)


def _net(arch: str, scale: int, seed: int, **kw: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if arch == "rcan":
        spec = ModelSpec(
            arch="rcan",
            scale=scale,
            n_feats=8,
            n_resblocks=kw.get("blocks", 2),
            n_resgroups=kw.get("groups", 2),
            reduction=4,
        )
    else:
        spec = ModelSpec(arch="edsr", scale=scale, n_feats=8, n_resblocks=kw.get("blocks", 1))
    return build_model(spec).eval()


def _photo(size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A real photo crop, float32 [0, 1]."""
    img = skdata.astronaut()[100 : 100 + size[0] * 4 : 4, 150 : 150 + size[1] * 4 : 4]
    return (img.astype(np.float32) / 255.0).copy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _whole(pipe: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = pipe(torch.from_numpy(img.transpose(2, 0, 1).copy())[None])
    return y[0].numpy().transpose(1, 2, 0)


# --- composition -----------------------------------------------------------------------------


def test_scale_is_product_of_stages() -> None:
    assert Pipeline(None, _net("edsr", 4, 0)).scale == 4
    assert Pipeline(_net("rcan", 2, 0), _net("edsr", 2, 1)).scale == 4
    assert Pipeline(_net("rcan", 1, 0), _net("edsr", 2, 1), stage2_repeats=2).scale == 4
    with pytest.raises(UserError, match="scale 1 or 2"):
        Pipeline(_net("edsr", 4, 0), _net("edsr", 2, 1))


def test_forward_matches_stages_with_8bit_intermediate() -> None:
    s1, s2 = _net("rcan", 1, 0), _net("edsr", 2, 1)
    x = torch.from_numpy(_photo((12, 10)).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        got = Pipeline(s1, s2, stage2_repeats=2)(x)
        # Independently: round like an 8-bit image on disk between every network.
        t = np.clip(s1(x).numpy(), 0, 1)
        t = np.floor(t * 255 + 0.5) / 255
        u = np.clip(s2(torch.from_numpy(t.astype(np.float32))).numpy(), 0, 1)
        u = np.floor(u * 255 + 0.5) / 255
        want = np.clip(s2(torch.from_numpy(u.astype(np.float32))).numpy(), 0, 1)
        unrounded = Pipeline(s1, s2, stage2_repeats=2, quantize_intermediate=False)(x)
        want_unrounded = s2(s2(s1(x).clamp(0, 1)).clamp(0, 1)).clamp(0, 1)
    assert got.shape == (1, 3, 48, 40)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    torch.testing.assert_close(unrounded, want_unrounded, atol=1e-6, rtol=0)
    assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0


def test_rounded_intermediate_equals_mapped_set_on_disk() -> None:
    """Stage 2 of a pipeline sees what it would read back from a PNG written by stage 1."""
    s1, s2 = _net("rcan", 2, 3), _net("edsr", 2, 4)
    x = torch.from_numpy(_photo((10, 12)).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        mapped = s1(x)[0].clamp(0, 1).numpy().transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(np.floor(mapped * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
        back = np.asarray(Image.open(buf)).astype(np.float32) / 255
        want = s2(torch.from_numpy(back.transpose(2, 0, 1).copy())[None]).clamp(0, 1)
        got = Pipeline(s1, s2)(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# --- tiling ----------------------------------------------------------------------------------


def test_tiling_is_exact_for_a_network_without_global_pooling() -> None:
    """EDSR's receptive field is local: with enough pad a tile sees exactly what the whole sees."""
    pipe = Pipeline(None, _net("edsr", 2, 5))
    img = _photo((37, 45))
    whole = _whole(pipe, img)
    tiled = pipe.restore(img, tile=16, tile_pad=10, device="cpu")
    assert tiled.shape == (74, 90, 3)
    np.testing.assert_allclose(tiled, np.clip(whole, 0, 1), atol=1e-5)


def test_tiled_rcan_pipeline_matches_whole_image() -> None:
    """≥ 50 dB on a real photo with a random RCAN (channel attention pools over the tile)."""
    pipe = Pipeline(_net("rcan", 2, 6), _net("rcan", 2, 7))
    img = _photo((40, 48))
    whole = pipe.restore(img, tile=None, device="cpu")
    np.testing.assert_allclose(whole, _whole(pipe, img), atol=1e-6)
    tiled = pipe.restore(img, tile=16, tile_pad=16, device="cpu")
    assert tiled.shape == whole.shape == (160, 192, 3)
    assert _psnr(tiled, whole) >= 50.0
    # The test can fail: without context pad the seams show.
    seams = pipe.restore(img, tile=16, tile_pad=0, device="cpu")
    assert _psnr(seams, whole) < 50.0


def test_tile_auto_uses_the_memory_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = Pipeline(None, _net("rcan", 2, 8))
    floats = pipe.floats_per_pixel()
    # RCAN width 8, ×2: 8·8 + 2·8·4 = 128 floats per pixel in the network, +3 in and +12 out.
    assert floats == pytest.approx(8 * 8 + 2 * 8 * 4 + 3 + 12)
    budget = int(4 * floats * (24 + 2 * 4) ** 2)  # a 24-pixel tile plus 4 pad on each side
    monkeypatch.setattr(pipeline_module, "free_memory", lambda device: budget)
    calls: list[tuple[int, ...]] = []
    original = pipeline_module.restore_image

    def spy(run, img, **kw):  # type: ignore[no-untyped-def]
        calls.append((kw["tile"],))
        return original(run, img, **kw)

    monkeypatch.setattr(pipeline_module, "restore_image", spy)
    img = _photo((40, 48))
    auto = pipe.restore(img, tile="auto", tile_pad=4, device="cpu")
    assert calls == [(24,)]
    whole = _whole(pipe, img)
    assert _psnr(auto, np.clip(whole, 0, 1)) >= 40.0  # pad 4 only: a sanity bound


def test_auto_tile_rule() -> None:
    # 100 floats = 400 bytes per pixel; a budget of exactly 100×100 pixels.
    budget = 400 * 100 * 100
    assert auto_tile(50, 60, floats_per_pixel=100, tile_pad=10, budget=budget) is None
    assert auto_tile(500, 300, floats_per_pixel=100, tile_pad=10, budget=budget) == 80
    assert auto_tile(500, 300, floats_per_pixel=100, tile_pad=14, budget=budget) == 72
    assert auto_tile(5000, 5000, floats_per_pixel=100, tile_pad=10, budget=400) == 16
    assert activation_floats_per_pixel([(64, 2), (64, 2)]) == pytest.approx(
        max(8 * 64 + 8 * 64, 4 * (8 * 64 + 8 * 64)) + 3 * (1 + 16)
    )


def test_tiled_memory_is_output_buffer_plus_tiles() -> None:
    """numpy peak while tiling: the output buffer plus small per-tile arrays, not a second copy."""
    img = np.random.default_rng(0).random((96, 96, 3), dtype=np.float32)

    def run(patch: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(patch, 2, axis=2), 2, axis=3)

    out_bytes = 192 * 192 * 3 * 4
    tracemalloc.start()
    out = restore_image(run, img, scale=2, tile=16, tile_pad=4)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(out, run(img.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0))
    assert peak < out_bytes + 4 * (2 * (16 + 8)) ** 2 * 3 * 4


def test_restore_rejects_a_model_with_the_wrong_scale() -> None:
    with pytest.raises(UserError, match="expected"):
        restore_image(lambda p: p, np.zeros((8, 8, 3), np.float32), scale=2, tile=None, tile_pad=0)
    with pytest.raises(UserError, match="--tile-pad"):
        restore_image(lambda p: p, np.zeros((8, 8, 3), np.float32), scale=1, tile=8, tile_pad=-1)


def test_a_tile_pad_past_the_image_runs_the_image_once() -> None:
    img = _photo((24, 20))
    calls: list[tuple[int, ...]] = []

    def run(patch: np.ndarray) -> np.ndarray:
        calls.append(patch.shape)
        return np.repeat(np.repeat(patch, 2, axis=2), 2, axis=3)

    out = restore_image(run, img, scale=2, tile=8, tile_pad=10**9)
    assert calls == [(1, 3, 24, 20)]
    np.testing.assert_array_equal(out, np.repeat(np.repeat(img, 2, axis=0), 2, axis=1))


def test_a_tile_pad_that_is_not_an_integer_is_refused() -> None:
    img = np.zeros((8, 8, 3), np.float32)
    for pad in (1.5, 1e9, "16", True):
        with pytest.raises(UserError, match=r"--tile-pad must be an integer >= 0"):
            restore_image(lambda p: p, img, scale=1, tile=8, tile_pad=pad)  # type: ignore[arg-type]


def test_auto_tile_refuses_a_pad_that_leaves_no_room_for_a_tile() -> None:
    budget = 400 * 100 * 100  # 100×100 pixels of 100 floats
    with pytest.raises(
        UserError, match=r"--tile-pad 1000000000: .*lower --tile-pad \(at most 42 here\)"
    ):
        auto_tile(500, 300, floats_per_pixel=100, tile_pad=10**9, budget=budget)
    assert auto_tile(500, 300, floats_per_pixel=100, tile_pad=42, budget=budget) == 16


@pytest.mark.parametrize("dtype, levels", [(np.uint8, 255), (np.uint16, 65535)])
def test_an_integer_output_buffer_holds_what_writing_the_float_one_would(
    dtype: type, levels: int
) -> None:
    pipe = Pipeline(None, _net("edsr", 2, 3))
    img = _photo((20, 24))
    floats = pipe.restore(img, tile=8, tile_pad=4)
    ints = pipe.restore(img, tile=8, tile_pad=4, dtype=dtype)
    assert ints.dtype == dtype and ints.shape == floats.shape
    want = np.clip(np.floor(floats.astype(np.float64) * levels + 0.5), 0, levels)
    np.testing.assert_array_equal(ints, want.astype(dtype))


# --- bundles ---------------------------------------------------------------------------------


def test_bundle_round_trip(tmp_path: Path) -> None:
    s1, s2 = _net("rcan", 1, 9), _net("rcan", 2, 10)
    pipe = Pipeline(s1, s2, stage2_repeats=2, name="map1-offshelf-x2x2")
    path = tmp_path / "b" / "map1-offshelf-x2x2.safetensors"
    pipe.save_bundle(path, {"domain": "bicubic-x4", "branch": "map1-offshelf-x2x2"})
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["format"] == "twostage-pipeline" and meta["version"] == "1"
    assert meta["domain"] == "bicubic-x4" and meta["branch"] == "map1-offshelf-x2x2"
    assert meta["scale"] == "4" and meta["stage2_repeats"] == "2"
    assert json.loads(meta["stage1_spec"]) == s1.spec.to_dict()
    assert json.loads(meta["stage2_spec"]) == s2.spec.to_dict()
    assert {k.split(".", 1)[0] for k in keys} == {"stage1", "stage2"}
    assert len(keys) == len(s1.state_dict()) + len(s2.state_dict())  # x2x2 stored once

    loaded = load_pipeline(path, device="cpu")
    assert isinstance(loaded, Pipeline)
    assert loaded.scale == 4 and loaded.stage2_repeats == 2 and loaded.name == pipe.name
    img = _photo((9, 11))
    pipe = pipe.to(memory_format=torch.channels_last)  # load_pipeline's layout: same arithmetic
    np.testing.assert_array_equal(
        loaded.restore(img, device="cpu"), pipe.restore(img, device="cpu")
    )


def test_bundle_with_a_stray_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.safetensors"
    Pipeline(None, _net("edsr", 2, 11)).save_bundle(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    state["stage2.extra.weight"] = torch.zeros(1)
    save_file(state, str(path), metadata=meta)
    with pytest.raises(UserError, match=r"stage2.*extra\.weight"):
        load_pipeline(path, device="cpu")


def test_reserved_metadata_and_unbundlable_stage(tmp_path: Path) -> None:
    pipe = Pipeline(None, _net("edsr", 2, 12))
    with pytest.raises(UserError, match="reserved"):
        pipe.save_bundle(tmp_path / "x.safetensors", {"scale": "3"})

    class Plain(torch.nn.Module):
        scale = 2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x, scale_factor=2)

    with pytest.raises(UserError, match="no ModelSpec"):
        Pipeline(None, Plain()).save_bundle(tmp_path / "y.safetensors")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("quantize", "bits"), [(True, 8), (True, 16), (False, 8)])
def test_bundle_keeps_its_intermediate_rounding(quantize: bool, bits: int, tmp_path: Path) -> None:
    """A loaded bundle rounds its intermediate as it was saved: 8 bits, 16 bits, or not at all."""
    s1, s2 = _net("rcan", 1, 5), _net("edsr", 2, 6)
    pipe = Pipeline(s1, s2, quantize_intermediate=quantize, intermediate_bit_depth=bits)
    path = tmp_path / "b.safetensors"
    pipe.save_bundle(path)
    loaded = load_pipeline(path, device="cpu")
    assert isinstance(loaded, Pipeline)
    assert (loaded.quantize_intermediate, loaded.intermediate_bit_depth) == (quantize, bits)
    img = _photo((9, 11))
    pipe = pipe.to(memory_format=torch.channels_last)  # load_pipeline's layout
    got = loaded.restore(img, device="cpu")
    np.testing.assert_array_equal(got, pipe.restore(img, device="cpu"))
    # The settings matter for this input: the other roundings give other outputs.
    for other_q, other_bits in [(True, 8), (True, 16), (False, 8)]:
        if (other_q, other_bits) != (quantize, bits):
            other = Pipeline(
                s1, s2, quantize_intermediate=other_q, intermediate_bit_depth=other_bits
            )
            assert not np.array_equal(got, other.restore(img, device="cpu"))


# ----------------------------------------------------------------------- crafted ONNX models


def _onnx_model(
    path: Path,
    *,
    shape: tuple[int | str, ...] = ("N", 3, "H", "W"),
    dtype: str = "float",
    second_input: bool = False,
    meta: dict[str, str] | None = None,
) -> Path:
    """A ×2 nearest-neighbour ONNX graph built by hand, with the input and metadata asked for."""
    import onnx
    from onnx import TensorProto, helper

    elem = {"float": TensorProto.FLOAT, "uint8": TensorProto.UINT8}[dtype]
    nodes = [helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT)]
    nodes.append(helper.make_node("Resize", ["x", "", "scales"], ["output"], mode="nearest"))
    inputs = [helper.make_tensor_value_info("input", elem, list(shape))]
    if second_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(
        nodes,
        "x2",
        inputs,
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, None, None])],
        initializer=[helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (meta or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


BAD_ONNX = {
    "fixed size": ({"shape": (1, 3, 32, 32)}, "fixed size"),
    "second input": ({"second_input": True}, "2 inputs"),
    "uint8 input": ({"dtype": "uint8"}, r"tensor\(uint8\)"),
    **{
        f"{key}={value}": ({"meta": {key: value}}, f"{key}='{value}'")
        for key in ("scale", "activation_floats_per_pixel")
        for value in ("abc", "nan", "-2")
    },
    "scale=100000": ({"meta": {"scale": "100000"}}, "scale='100000': expected an integer 1 to 16"),
}


@pytest.mark.parametrize("kind", BAD_ONNX)
def test_onnx_models_twostage_cannot_run_are_refused_at_load(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from twostage.cli import main

    options, message = BAD_ONNX[kind]
    path = _onnx_model(tmp_path / "crafted.onnx", **options)
    with pytest.raises(UserError, match=message):
        load_pipeline(path)
    photo = tmp_path / "a.png"
    Image.new("RGB", (12, 10), (90, 120, 30)).save(photo)
    assert main(["restore", "--model", str(path), str(photo), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "crafted.onnx" in err[0]


def test_hand_built_onnx_model_restores_at_its_probed_or_stated_scale(tmp_path: Path) -> None:
    img = np.random.default_rng(0).random((10, 12, 3), dtype=np.float32)
    for meta in (None, {"scale": "2", "activation_floats_per_pixel": "40.5"}):
        pipe = load_pipeline(_onnx_model(tmp_path / "x2.onnx", meta=meta))
        assert pipe.scale == 2
        np.testing.assert_array_equal(pipe.restore(img, tile=None), img.repeat(2, 0).repeat(2, 1))


# --------------------------------- absurd bundle metadata, one-channel ONNX models, NaN outputs


def _bundle_with(tmp_path: Path, **changes: str) -> Path:
    """A one-stage bundle of a tiny EDSR ×2 whose metadata `changes` overwrite."""
    path = tmp_path / "b.safetensors"
    Pipeline(None, _net("edsr", 2, 0)).save_bundle(path)
    with safe_open(str(path), framework="pt") as f:
        meta = {**f.metadata(), **changes}
    save_file(load_file(str(path)), str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    "field, value", [("stage2_repeats", "20"), ("intermediate_bit_depth", "1000000")]
)
def test_absurd_bundle_metadata_is_refused_by_name(tmp_path: Path, field: str, value: str) -> None:
    path = _bundle_with(tmp_path, **{field: value})
    with pytest.raises(CheckpointError, match=rf"{field}={value} is out of range"):
        load_pipeline(path)


def test_absurd_bundle_spec_is_refused_before_building(
    tmp_path: Path, tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    spec = {**tiny_edsr().spec.to_dict(), "n_feats": 10**7, "n_resblocks": 10**6}
    path = _bundle_with(tmp_path, stage2_spec=json.dumps(spec))
    with pytest.raises(CheckpointError, match=r"the weights are EDSR ×2 \(1 block, 8 ch\)"):
        load_pipeline(path)


def test_bundle_repeats_out_of_range_are_refused_as_string_or_number(tmp_path: Path) -> None:
    path = _bundle_with(tmp_path, stage2_repeats='"1000000"')
    with pytest.raises(CheckpointError, match=r'stage2_repeats="1000000" is out of range'):
        load_pipeline(path)
    path = _bundle_with(tmp_path, stage2_repeats="1000000")
    with pytest.raises(CheckpointError, match="stage2_repeats=1000000 is out of range"):
        load_pipeline(path)


def test_onnx_model_with_one_input_channel_is_refused(
    tmp_path: Path, photo_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str]]
) -> None:
    path = tmp_path / "gray.onnx"
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    torch.onnx.export(conv, (torch.rand(1, 1, 8, 8),), str(path), dynamo=False)
    with pytest.raises(UserError, match=r"input has shape \[1, 1, 8, 8\].*N×3×H×W"):
        OnnxPipeline(path)
    photo = photo_file(tmp_path / "in")
    code, err = run_cli("restore", "--model", str(path), str(photo), "--out", str(tmp_path / "o"))
    assert code == 2 and "N×3×H×W" in err and err.count("\n") == 1


def test_nan_output_is_an_error_not_a_black_image() -> None:
    img = np.full((16, 16, 3), 0.5, np.float32)
    with pytest.raises(UserError, match="NaN or Inf"):
        restore_image(lambda p: p * np.nan, img, scale=1, tile=None, tile_pad=0)


# --- strength and self-ensemble --------------------------------------------------------------


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.transpose(2, 0, 1).copy())[None]


def _image(t: torch.Tensor) -> np.ndarray:
    return t[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("map_scale", [2, 1])
def test_strength_zero_is_stage2_on_the_rounded_bicubic_intermediate(map_scale: int) -> None:
    """The off-the-shelf path: stage 2 on MATLAB bicubic (×1 map: the input), rounded to 8 bits."""
    from twostage.ops.imageio import quantize
    from twostage.ops.resize import imresize

    s1, s2 = _net("rcan", map_scale, 20), _net("edsr", 2, 21)
    img = _photo((14, 18))
    got = Pipeline(s1, s2).restore(img, tile=None, strength=0)
    plain = imresize(img, 2.0) if map_scale == 2 else img
    with torch.no_grad():
        want = _image(s2(_tensor(quantize(plain))).clamp(0, 1))
    assert np.array_equal(got, want)


def test_strength_one_is_todays_output_bit_exactly() -> None:
    from twostage.ops.imageio import quantize

    s1, s2 = _net("rcan", 2, 22), _net("edsr", 2, 23)
    img = _photo((14, 18))
    pipe = Pipeline(s1, s2)
    with torch.no_grad():
        want = _image(s2(quantize(s1(_tensor(img)))).clamp(0, 1))
    assert np.array_equal(pipe.restore(img, tile=None, strength=1), want)
    assert np.array_equal(pipe.restore(img, tile=None), want)  # the default strength is 1


def test_strength_blends_stage1_with_bicubic_before_the_rounding() -> None:
    from twostage.ops.imageio import quantize
    from twostage.ops.resize import imresize

    s1, s2 = _net("rcan", 2, 24), _net("edsr", 2, 25)
    img = _photo((14, 18))
    with torch.no_grad():
        mixed = 0.25 * s1(_tensor(img)) + 0.75 * _tensor(imresize(img, 2.0))
        want = _image(s2(quantize(mixed)).clamp(0, 1))
    got = Pipeline(s1, s2).restore(img, tile=None, strength=0.25)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.array_equal(got, Pipeline(s1, s2).restore(img, tile=None))


def test_tiled_restore_at_a_strength_and_with_tta_matches_whole_image() -> None:
    """The same ≥ 50 dB rule as without them (channel attention pools over the tile)."""
    pipe = Pipeline(_net("rcan", 2, 26), _net("rcan", 2, 27))
    img = _photo((40, 48))
    for options in ({"strength": 0.5}, {"strength": 0.5, "tta": True}):
        whole = pipe.restore(img, tile=None, **options)
        tiled = pipe.restore(img, tile=16, tile_pad=16, **options)
        assert _psnr(tiled, whole) >= 50, options


def test_tta_averages_the_eight_flips_and_rotations() -> None:
    pipe = Pipeline(_net("rcan", 2, 28), _net("edsr", 2, 29))
    img = _photo((12, 17))  # not square: the rotated runs are 17×12
    outputs = []
    with torch.no_grad():
        for turns in range(4):
            for flip in (False, True):
                x = torch.rot90(_tensor(img), turns, dims=(2, 3))
                x = x.flip(3) if flip else x
                y = pipe(x)
                y = y.flip(3) if flip else y
                outputs.append(torch.rot90(y, -turns, dims=(2, 3)))
    want = _image(torch.stack(outputs).mean(0))
    got = pipe.restore(img, tile=None, tta=True)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert _psnr(got, pipe.restore(img, tile=None)) < 100  # not the plain output


@pytest.mark.parametrize("strength", [0.5, -0.1, 1.5, float("nan"), True, "0.5"])
def test_a_strength_out_of_range_or_on_a_single_network_is_refused(strength: object) -> None:
    single = Pipeline(None, _net("edsr", 2, 30), name="edsr2")
    with pytest.raises(UserError, match="strength") as error:
        single.restore(_photo((8, 8)), strength=strength)  # type: ignore[arg-type]
    if strength == 0.5:
        assert "edsr2 is a single network" in str(error.value)
    else:
        assert "expected a number from 0 to 1" in str(error.value)
        with pytest.raises(UserError, match="expected a number from 0 to 1"):
            Pipeline(_net("rcan", 2, 0), _net("edsr", 2, 1), strength=strength)  # type: ignore[arg-type]


def test_a_bundle_keeps_its_default_strength_and_an_older_one_restores_fully(
    tmp_path: Path,
) -> None:
    s1, s2 = _net("rcan", 2, 31), _net("edsr", 2, 32)
    img = _photo((10, 12))
    path = tmp_path / "b.safetensors"
    Pipeline(s1, s2, strength=0.25).save_bundle(path)
    loaded = load_pipeline(path)
    assert loaded.strength == 0.25
    default = loaded.restore(img, tile=None)  # channels_last once loaded: float rounding
    np.testing.assert_allclose(default, loaded.restore(img, tile=None, strength=0.25), atol=0)
    np.testing.assert_allclose(
        default, Pipeline(s1, s2).restore(img, tile=None, strength=0.25), atol=1e-6
    )
    assert _psnr(default, loaded.restore(img, tile=None, strength=1)) < 100

    def rewritten(strength: str | None) -> Path:
        with safe_open(str(path), framework="pt") as f:
            meta = {k: v for k, v in f.metadata().items() if k != "strength"}
        out = tmp_path / f"changed-{len(list(tmp_path.iterdir()))}.safetensors"
        extra = {} if strength is None else {"strength": strength}
        save_file(load_file(str(path)), str(out), metadata={**meta, **extra})
        return out

    assert load_pipeline(rewritten(None)).strength == 1.0  # older than the field: today's path
    for bad in ("2", "-0.5", "null", '"half"', "NaN"):
        with pytest.raises(CheckpointError, match="strength"):
            load_pipeline(rewritten(bad))
