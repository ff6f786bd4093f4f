"""The public API (`import twostage`, docs/api.md): its pinned surface, the docs' example, and
that it gives what the command line gives, raising the command's errors instead of printing."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import twostage
from twostage.data.samples import load_samples
from twostage.errors import UserError
from twostage.models.shipped import SHIPPED
from twostage.ops.degrade import derive_seed
from twostage.ops.imageio import read_image, to_float, to_uint16, write_image

ROOT = Path(__file__).resolve().parents[1]

# The public surface. Changing a line here is changing the API: say so in CHANGELOG.md.
FACADE = {
    "load": "(name_or_path: 'str | os.PathLike[str]', *, device: 'str' = 'auto', "
    "precision: 'str' = 'auto') -> 'Model'",
    "degrade": "(image: 'ImageLike', preset: 'str | os.PathLike[str]', *, "
    "scale: 'int | None' = None, seed: 'int' = 0) -> 'np.ndarray'",
    "score": "(pred: 'ImageLike', gt: 'ImageLike', *, crop_border: 'int' = 0, "
    "y_channel: 'bool' = False) -> 'Scores'",
    "run": "(recipe: 'str | os.PathLike[str] | Recipe', *, out: 'str | os.PathLike[str]', "
    "data: 'Mapping[str, str | os.PathLike[str]] | Sequence[tuple[str, str | os.PathLike[str]]] "
    "| None' = None, profile: 'str' = 'cpu', "
    "seeds: 'int' = 1, device: 'str' = 'auto', precision: 'str' = 'fp32', "
    "branches: 'Sequence[str] | None' = None, "
    "offshelf: 'Mapping[str, str | os.PathLike[str]] | None' = None, "
    "test_suite: 'bool' = False, quiet: 'bool' = False, max_pixels: 'int' = 100000000, "
    "skip_unreadable: 'bool' = False) -> 'RunResults'",
    "train_network": "(config: 'str | os.PathLike[str] | TrainConfig', *, "
    "out: 'str | os.PathLike[str] | None' = None, resume: 'bool' = False, "
    "overwrite: 'bool' = False, overrides: 'Sequence[str]' = (), device: 'str | None' = None, "
    "quiet: 'bool' = False) -> 'TrainResult'",
    "Model.restore": "(self, image: 'ImageLike', *, tile: \"int | Literal['auto'] | None\" = "
    "'auto', tile_pad: 'int' = 16, strength: 'float | None' = None, tta: 'bool' = False) "
    "-> 'ImageLike'",
}
FIELDS = {
    "Model": ["name", "scale", "precision", "device", "strength", "_pipeline"],
    "Scores": ["psnr", "ssim"],
    "Mean": ["branch", "test_set", "psnr", "ssim", "images", "lpips_alex", "lpips_vgg"],
    "RunResults": ["out", "recipe", "profile", "branches", "test_sets", "means", "data"],
}


def test_the_facade_names_and_signatures_are_pinned() -> None:
    import twostage.evaluate
    import twostage.runner
    import twostage.train  # submodules must not shadow a facade name

    assert sorted(twostage.__all__) == sorted(
        ["UserError", "__version__", *FIELDS, *(n for n in FACADE if "." not in n)]
    )
    for name, signature in FACADE.items():
        owner, _, attr = name.rpartition(".")
        fn = getattr(getattr(twostage, owner) if owner else twostage, attr)
        assert callable(fn) and fn.__module__ == "twostage.api", name
        assert str(inspect.signature(fn)) == signature, name
    for name, fields in FIELDS.items():
        assert [f.name for f in dataclasses.fields(getattr(twostage, name))] == fields, name
    assert twostage.UserError is UserError


def test_import_twostage_loads_neither_numpy_nor_torch() -> None:
    code = (
        "import sys, twostage; twostage.load; twostage.Model; "
        "print(sorted(m for m in ('numpy', 'torch', 'PIL') if m in sys.modules))"
    )
    env = {"PYTHONPATH": str(Path(twostage.__file__).parents[1]), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_docs_example_runs_on_an_embedded_photo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first python block of docs/api.md, as it stands, after `twostage data samples`
    wrote the test photo it reads (here only that one)."""
    chelsea = dict(load_samples("test"))["chelsea"]
    (tmp_path / "photos" / "test").mkdir(parents=True)
    Image.fromarray(chelsea).save(tmp_path / "photos" / "test" / "chelsea.png")
    monkeypatch.chdir(tmp_path)
    example = _python_blocks((ROOT / "docs" / "api.md").read_text(encoding="utf-8"))[0]
    namespace: dict = {}
    exec(compile(example, "docs/api.md", "exec"), namespace)
    assert namespace["lr"].shape == (24, 24, 3) and namespace["lr"].dtype == np.float32
    restored = namespace["restored"]
    assert restored.shape == (96, 96, 3) and restored.dtype == np.float32
    assert namespace["restored_image"].size == (96, 96)
    # the PIL path is the float path rounded to 8 bits (lr is on the 8-bit grid)
    assert np.array_equal(np.asarray(namespace["restored_image"]), _to_uint8(restored))
    ours, bicubic = namespace["ours"], namespace["bicubic"]
    assert 10 < ours.psnr < 60 and 10 < bicubic.psnr < 60 and 0 < ours.ssim < 1
    assert f"blind-x4 {ours.psnr:.2f} dB" in capsys.readouterr().out


def _to_uint8(img: np.ndarray) -> np.ndarray:
    from twostage.ops.imageio import to_uint8

    return to_uint8(img)


def _photo(height: int = 20, width: int = 24) -> np.ndarray:
    return np.ascontiguousarray(
        dict(load_samples("test"))["coffee"][150 : 150 + height, 200 : 200 + width]
    )


@pytest.mark.parametrize(
    "options",
    [[], ["--tile", "8", "--tile-pad", "4", "--precision", "fp32"]],
    ids=["defaults", "tiled-fp32"],
)
def test_restoring_through_the_api_is_bit_identical_to_the_cli(
    tmp_path: Path, run_cli, options: list[str]
) -> None:
    photo = _photo()
    Image.fromarray(photo).save(tmp_path / "photo.png")
    code, err = run_cli(
        "restore", str(tmp_path / "photo.png"), "--out", str(tmp_path / "out"), *options
    )
    assert code == 0, err
    cli = np.asarray(Image.open(tmp_path / "out" / "photo.png"))
    kwargs = dict(zip(options[::2], options[1::2]))
    model = twostage.load("blind-x4", precision=kwargs.get("--precision", "auto"))
    tile = int(kwargs["--tile"]) if "--tile" in kwargs else "auto"
    ours = model.restore(photo, tile=tile, tile_pad=int(kwargs.get("--tile-pad", 16)))
    assert ours.dtype == np.uint8 and ours.shape == cli.shape == (80, 96, 3)
    assert np.array_equal(ours, cli)


def test_strength_and_tta_through_the_api_are_bit_identical_to_the_cli(
    tmp_path: Path, run_cli
) -> None:
    photo = _photo(12, 16)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    options = ("--strength", "0.5", "--tta", "--precision", "fp32")
    out = tmp_path / "out"
    code, err = run_cli("restore", str(tmp_path / "photo.png"), "--out", str(out), *options)
    assert code == 0, err
    cli = np.asarray(Image.open(out / "photo.png"))
    model = twostage.load("blind-x4", precision="fp32")
    ours = model.restore(photo, strength=0.5, tta=True)
    assert np.array_equal(ours, cli)
    assert not np.array_equal(ours, model.restore(photo, strength=0.5))
    assert not np.array_equal(model.restore(photo, strength=0), model.restore(photo, strength=1))
    assert model.strength == SHIPPED["blind-x4"].strength  # the default a call uses
    assert np.array_equal(model.restore(photo), model.restore(photo, strength=model.strength))


def test_a_16_bit_restore_through_the_api_is_bit_identical_to_the_cli(
    tmp_path: Path, run_cli, edsr_file: Path
) -> None:
    photo16 = to_uint16(to_float(_photo()) * 0.9 + 0.05)  # values off the 8-bit grid
    write_image(tmp_path / "photo.png", to_float(photo16), bit_depth=16)
    args = ["--model", str(edsr_file), "--out", str(tmp_path / "out"), "--precision", "fp32"]
    code, err = run_cli("restore", str(tmp_path / "photo.png"), *args)
    assert code == 0, err
    cli, info = read_image(tmp_path / "out" / "photo.png")
    assert info.bit_depth == 16
    ours = twostage.load(edsr_file, precision="fp32").restore(photo16)
    assert ours.dtype == np.uint16 and np.array_equal(to_float(ours), cli)


def test_a_float_or_pil_image_comes_back_as_it_went_in(edsr_file: Path) -> None:
    model = twostage.load(str(edsr_file), device="cpu", precision="fp32")
    photo = _photo(8, 10)
    as_float = model.restore(to_float(photo).astype(np.float64), tile=None)
    assert as_float.dtype == np.float64 and as_float.shape == (16, 20, 3)
    as_pil = model.restore(Image.fromarray(photo))
    assert isinstance(as_pil, Image.Image) and as_pil.size == (20, 16)
    assert np.array_equal(np.asarray(as_pil), _to_uint8(as_float))
    assert (model.name, model.scale, model.precision, model.device) == ("m", 2, "fp32", "cpu")
    assert model.strength == 1.0  # a single network: nothing to blend


def test_degrade_through_the_api_is_the_cli_degrade_of_a_file(tmp_path: Path, run_cli) -> None:
    photo = _photo(32, 40)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    args = ["--preset", "camera", "--scale", "4", "--seed", "3", "--out", str(tmp_path / "out")]
    code, err = run_cli("degrade", str(tmp_path / "photo.png"), *args)
    assert code == 0, err
    cli = np.asarray(Image.open(tmp_path / "out" / "photox4.png"))
    ours = twostage.degrade(photo, "camera", scale=4, seed=derive_seed(3, "photo"))
    assert ours.dtype == np.float32 and np.array_equal(_to_uint8(ours), cli)
    assert np.array_equal(ours, to_float(cli))  # on the 8-bit grid exactly


def test_score_through_the_api_is_the_cli_evaluate_of_two_files(tmp_path: Path, run_cli) -> None:
    gt = _photo(32, 40)
    pred = np.clip(gt.astype(int) + np.random.default_rng(0).integers(-9, 10, gt.shape), 0, 255)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    Image.fromarray(pred.astype(np.uint8)).save(tmp_path / "pred.png")
    js = tmp_path / "scores.json"
    files = ["--pred", str(tmp_path / "pred.png"), "--gt", str(tmp_path / "gt.png")]
    code, err = run_cli("evaluate", *files, "--crop-border", "4", "--y-channel", "--json", str(js))
    assert code == 0, err
    cli = json.loads(js.read_text())["mean"]
    ours = twostage.score(pred.astype(np.uint8), gt, crop_border=4, y_channel=True)
    assert (ours.psnr, ours.ssim) == (cli["psnr"], cli["ssim"])


def _cli_error(run_cli, *args: str) -> str:
    code, err = run_cli(*args)
    assert code == 2
    return err.strip().removeprefix("twostage: error: ")


def test_errors_are_the_cli_messages_raised_not_printed(
    tmp_path: Path, run_cli, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(_photo()).save(tmp_path / "photo.png")
    missing = str(tmp_path / "no-such.safetensors")
    with pytest.raises(UserError) as exc:
        twostage.load(missing)
    assert capsys.readouterr() == ("", "")
    restore = ["restore", str(tmp_path / "photo.png"), "--out", str(tmp_path / "out")]
    assert _cli_error(run_cli, *restore, "--model", missing) == str(exc.value)
    with pytest.raises(UserError) as exc:
        twostage.degrade(_photo(), "no-such-preset", seed=0)
    degrade = ["degrade", str(tmp_path / "photo.png"), "--out", str(tmp_path / "lr")]
    assert _cli_error(run_cli, *degrade, "--preset", "no-such-preset") == str(exc.value)
    with pytest.raises(UserError) as exc:
        twostage.load("blind-x4", precision="fp8")
    assert str(exc.value).startswith("--precision 'fp8': expected one of")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8), np.uint8), "expected an H×W×3 RGB image, got shape (8, 8)"),
        (np.zeros((8, 8, 4), np.uint8), "got shape (8, 8, 4)"),
        (np.zeros((0, 8, 3), np.uint8), "got shape (0, 8, 3)"),
        (np.zeros((8, 8, 3), np.int32), "int32 samples have no defined white level"),
        (np.full((8, 8, 3), 1.5, np.float32), "float values span [1.5, 1.5], not [0, 1]"),
        (np.full((8, 8, 3), np.nan, np.float32), "holds NaN or Inf"),
        (Image.new("L", (8, 8)), "a PIL image in mode 'L'; convert it first"),
        ([[0, 0, 0]], "expected a numpy array or a PIL image, got list"),
    ],
)
def test_a_bad_image_is_refused_naming_what_is_wrong(
    edsr_file: Path, image: object, message: str
) -> None:
    model = twostage.load(edsr_file, device="cpu", precision="fp32")
    with pytest.raises(UserError, match=re.escape(message)):
        model.restore(image)
    with pytest.raises(UserError, match=re.escape(message)):
        twostage.score(image, image)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strength": 0.5}, "strength 0.5: m is a single network"),
        ({"strength": 0}, "strength 0: m is a single network"),
        ({"strength": 1.5}, "strength 1.5: expected a number from 0 to 1"),
        ({"tta": "yes"}, "tta must be True or False, got 'yes'"),
        ({"tile": 4}, "tile must be 'auto', None or an integer >= 8, got 4"),
        ({"tile": "64"}, "got '64'"),
        ({"tile": True}, "got True"),
        ({"tile_pad": -1}, "--tile-pad must be an integer >= 0, got -1"),
    ],
)
def test_a_bad_restore_option_is_refused(edsr_file: Path, kwargs: dict, message: str) -> None:
    model = twostage.load(edsr_file, device="cpu", precision="fp32")
    with pytest.raises(UserError, match=re.escape(message)):
        model.restore(_photo(8, 8), **kwargs)


def test_an_output_over_the_limit_is_refused_before_anything_is_allocated(
    edsr_file: Path,
) -> None:
    model = twostage.load(edsr_file, device="cpu", precision="fp32")
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (12000, 9000, 3))  # no memory
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with pytest.raises(UserError, match=re.escape("output would be 18000×24000 (432 MP)")):
            model.restore(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 24  # not the 1.3 GB of a float copy


def test_numpy_integers_are_integers(edsr_file: Path) -> None:
    model = twostage.load(edsr_file, device="cpu", precision="fp32")
    photo = _photo(12, 12)
    tiled = model.restore(photo, tile=np.int64(8), tile_pad=np.int32(2))
    assert np.array_equal(tiled, model.restore(photo, tile=8, tile_pad=2))
    lr = twostage.degrade(photo, "bicubic", scale=np.int64(2), seed=np.uint32(1))
    assert lr.shape == (6, 6, 3)
    assert twostage.score(_photo(), _photo(), crop_border=np.int64(2)).psnr == 100.0


def test_score_and_degrade_refuse_bad_arguments() -> None:
    with pytest.raises(UserError, match=re.escape("pred is 10x8 but gt is 12x8")):
        twostage.score(_photo(8, 10), _photo(8, 12))
    with pytest.raises(UserError, match="crop_border must be an integer >= 0, got -1"):
        twostage.score(_photo(), _photo(), crop_border=-1)
    with pytest.raises(UserError, match=re.escape("seed must be an integer >= 0, got 1.5")):
        twostage.degrade(_photo(), "bicubic", scale=2, seed=1.5)  # type: ignore[arg-type]


def test_run_returns_typed_means_of_results_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` hands run_recipe its arguments and turns results.json's dict into RunResults."""
    import twostage.runner

    seen: dict = {}
    means = [
        {"branch": "interp-bicubic", "test_set": "t", "psnr": 20.0, "ssim": 0.5, "images": 3},
        {"branch": "direct-rcan", "test_set": "t", "psnr": 21.0, "ssim": 0.6, "images": 3,
         "lpips_alex": 0.25},
    ]  # fmt: skip
    results = {"recipe": "sr-x4", "profile": "tiny", "branches": ["interp-bicubic", "direct-rcan"],
               "test_sets": ["t"], "means": means}  # fmt: skip

    def fake(recipe, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs, recipe=recipe)
        return results

    monkeypatch.setattr(twostage.runner, "run_recipe", fake)
    got = twostage.run("sr-x4", out=str(tmp_path), data={"div2k": "/d"}, profile="tiny")
    assert seen["out"] == tmp_path and seen["data"] == [("div2k", Path("/d"))]
    assert got.mean("direct-rcan", "t") == twostage.Mean("direct-rcan", "t", 21.0, 0.6, 3, 0.25)
    assert got.means[0].lpips_alex is None and got.data is results
    with pytest.raises(UserError, match="no mean for branch 'map2' on 't'"):
        got.mean("map2", "t")
    with pytest.raises(UserError, match="branches: expected a list of names"):
        twostage.run("sr-x4", out=tmp_path, branches="direct-rcan")


def test_train_network_needs_a_run_folder_for_an_unnamed_config() -> None:
    from twostage.config import profile_defaults

    cfg = dataclasses.replace(profile_defaults("tiny"), name="")
    with pytest.raises(UserError, match="give out="):
        twostage.train_network(cfg)
