"""Degradation presets: determinism, sizes, kernels, noise levels, YAML, and the CLI."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from twostage.cli import main
from twostage.errors import UserError
from twostage.ops.degrade import (
    DOMAINS,
    PRESETS,
    Blur,
    Jpeg,
    Noise,
    Preset,
    Resize,
    box_kernel,
    convolve,
    degrade,
    disk_kernel,
    gaussian_kernel,
    get_preset,
    intermediate,
    load_preset,
    motion_kernel,
    preset_from_dict,
    presets_table,
    sample_kernel,
    save_preset,
)
from twostage.ops.imageio import read_image, write_image
from twostage.ops.resize import imresize


def _rand_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4 + 2, w // 4 + 2, 3))
    return np.clip(imresize(small, size=(h, w)), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def astronaut128() -> np.ndarray:
    img = skimage.data.astronaut().astype(np.float64) / 255.0
    return imresize(img, size=(128, 128)).clip(0, 1)


# presets with every parameter fixed: the seed changes nothing
SEED_FREE = {"bicubic", "gauss2", "defocus", "jpeg40", "webp40"}


@pytest.mark.parametrize("name", list(PRESETS))
def test_deterministic_per_seed(name: str) -> None:
    hr = _rand_image(48, 40)
    a = degrade(hr, name, seed=3)
    b = degrade(hr, name, seed=3)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(a, degrade(hr, name, seed=4)) == (name in SEED_FREE)


@pytest.mark.parametrize("name", list(PRESETS))
def test_output_size_and_grid(name: str) -> None:
    hr = _rand_image(50, 66)
    out = degrade(hr, name, seed=0)
    p = PRESETS[name]
    if p.resizes:
        assert out.shape == (50 // 4, 66 // 4, 3)
        assert degrade(hr, name, scale=2, seed=0).shape == (25, 33, 3)
        assert degrade(hr, name, scale=3, seed=0).shape == (16, 22, 3)
        k = out * 255.0
        np.testing.assert_allclose(k, np.round(k), atol=1e-4)  # on the uint8 grid
    else:
        assert out.shape == hr.shape
        k = out * 255.0
        assert np.abs(k - np.round(k)).max() > 0.01  # float, not quantised
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_too_small_image_is_a_user_error() -> None:
    with pytest.raises(UserError, match="too small"):
        degrade(_rand_image(3, 8), "bicubic", seed=0)


def test_same_size_presets_reject_scale() -> None:
    with pytest.raises(UserError, match="blur9"):
        degrade(_rand_image(16, 16), "blur9", scale=4, seed=0)


@pytest.mark.parametrize(
    "kernel",
    [
        gaussian_kernel(21, 3.0, 0.7, 1.0),
        gaussian_kernel(21, 2.0, 2.0, 0.0, shift=-0.5),
        box_kernel(7),
        box_kernel(9, shift=-0.5),
        disk_kernel(2.3),
        disk_kernel(1.0, shift=0.5),
        motion_kernel(9.0, 0.5),
        motion_kernel(4.5, 2.0, shift=-0.5),
    ],
)
def test_kernels_sum_to_one(kernel: np.ndarray) -> None:
    assert kernel.min() >= 0
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1


@pytest.mark.parametrize(
    "name", [n for n, p in PRESETS.items() if any(isinstance(s, Blur) for s in p.steps)]
)
def test_preset_kernels_sum_to_one(name: str) -> None:
    blur = next(s for s in PRESETS[name].steps if isinstance(s, Blur))
    for seed in range(5):
        k = sample_kernel(blur, np.random.default_rng(seed), scale=PRESETS[name].scale)
        assert k.sum() == pytest.approx(1.0, abs=1e-12)


def test_uniform_kernels_are_boxes() -> None:
    for k in (7, 9, 11):
        blur = next(s for s in PRESETS[f"blur{k}"].steps if isinstance(s, Blur))
        kern = sample_kernel(blur, np.random.default_rng(0))
        assert kern.shape == (k, k)
        np.testing.assert_allclose(kern, 1.0 / (k * k))


def _moments(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = k.shape[0] // 2
    yy, xx = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
    mean = np.array([(k * xx).sum(), (k * yy).sum()])
    dx, dy = xx - mean[0], yy - mean[1]
    cov = np.array(
        [[(k * dx * dx).sum(), (k * dx * dy).sum()], [(k * dx * dy).sum(), (k * dy * dy).sum()]]
    )
    return mean, cov


def test_anisotropic_gaussian_has_the_requested_covariance() -> None:
    theta = math.pi / 6
    k = gaussian_kernel(31, 3.0, 1.0, theta)
    _, cov = _moments(k)
    vals, vecs = np.linalg.eigh(cov)
    assert vals[1] == pytest.approx(9.0, rel=0.02)
    assert vals[0] == pytest.approx(1.0, rel=0.02)
    major = vecs[:, 1]  # (x, y) of the σ1 axis
    assert abs(math.atan2(major[1], major[0]) % math.pi - theta) < 0.01  # axis: mod π


def test_gaussian_aniso_preset_draws_anisotropic_kernels() -> None:
    blur = PRESETS["gaussian-aniso"].steps[0]
    ratios = []
    for seed in range(20):
        _, cov = _moments(sample_kernel(blur, np.random.default_rng(seed), scale=4))
        vals = np.linalg.eigvalsh(cov)
        ratios.append(math.sqrt(vals[1] / vals[0]))
    assert np.median(ratios) > 1.5  # most draws are clearly elongated
    assert len({round(r, 3) for r in ratios}) == 20  # a different kernel per seed


def test_shifted_kernels_are_centred_at_the_shift() -> None:
    for k in (
        gaussian_kernel(21, 2.0, 1.0, 0.3, shift=0.5),
        box_kernel(9, shift=0.5),
        disk_kernel(3.0, shift=0.5),
        motion_kernel(7.0, 0.3, shift=0.5),
    ):
        mean, _ = _moments(k)
        np.testing.assert_allclose(mean, [0.5, 0.5], atol=1e-4)


def test_disk_kernel_is_a_uniform_disk() -> None:
    r = 5.0
    k = disk_kernel(r)
    c = k.shape[0] // 2
    yy, xx = np.mgrid[-c : c + 1, -c : c + 1]
    dist = np.hypot(xx, yy)
    half_diag = math.sqrt(2) / 2
    inside, outside = dist < r - half_diag, dist > r + half_diag
    # pixels wholly inside carry 1/area each, pixels wholly outside nothing
    np.testing.assert_allclose(k[inside], 1 / (math.pi * r * r), rtol=0.01)
    assert np.all(k[outside] == 0)
    np.testing.assert_allclose(k, k.T, atol=1e-15)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_decimation_grid_matches_bicubic(scale: int) -> None:
    """On a horizontal ramp, LR pixel i must sit at HR position s·i + (s-1)/2 (as MATLAB)."""
    n = 24 * scale
    x = np.arange(n, dtype=np.float64)
    slope = 0.8 / n
    ramp = np.broadcast_to((0.1 + slope * x)[None, :, None], (n, n, 3)).copy()
    expected = 0.1 + slope * (scale * np.arange(24) + (scale - 1) / 2)
    for name in ("gaussian-aniso", "bicubic"):
        lr = degrade(ramp, name, scale=scale, seed=7)
        interior = slice(6, 18)  # away from the symmetric-boundary region
        np.testing.assert_allclose(lr[12, interior, 1], expected[interior], atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("name", ["blur7", "blur9", "blur11"])
def test_blur_presets_measure_40db_bsnr(name: str, astronaut128: np.ndarray) -> None:
    k = int(name[4:])
    blurred = convolve(astronaut128, np.full((k, k), 1.0 / (k * k)))
    out = degrade(astronaut128, name, seed=11).astype(np.float64)
    noise = out - blurred
    bsnr = 10 * math.log10(blurred.var() / noise.var())
    # clipping to [0, 1] removes a little noise in astronaut's black background (~+0.1 dB)
    assert abs(bsnr - 40.0) < 0.2
    assert abs(noise.mean()) < 1e-3


def test_poisson_gaussian_noise_variance() -> None:
    preset = Preset(
        name="pg",
        steps=(Noise(kind="poisson-gaussian", gain=0.01, sigma=0.02),),
        scale=1,
        float_output=True,
    )
    flat = np.full((96, 96, 3), 0.5, dtype=np.float32)
    out = degrade(flat, preset, seed=0).astype(np.float64)
    assert out.var() == pytest.approx(0.01 * 0.5 + 0.02**2, rel=0.05)
    assert out.mean() == pytest.approx(0.5, abs=0.003)


def test_jpeg_step_matches_pillow_at_that_quality() -> None:
    hr = _rand_image(64, 64)
    preset = Preset(name="j", steps=(Jpeg(quality=30),), scale=1)
    out = degrade(hr, preset, seed=0)
    u8 = np.floor(hr.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=30)
    expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")) / 255.0
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.abs(out - u8 / 255.0).mean() > 1 / 255  # it really compressed


def test_intermediate_domains() -> None:
    hr = _rand_image(64, 48)
    x4 = intermediate("bicubic-x4", hr)
    expected = np.floor(imresize(hr.astype(np.float64), 0.25) * 255 + 0.5) / 255
    np.testing.assert_allclose(x4, expected, atol=1e-6)
    assert intermediate("bicubic-x2", hr).shape == (32, 24, 3)
    assert intermediate("blur9", hr, seed=1).shape == hr.shape
    assert set(DOMAINS) == {"bicubic-x4", "bicubic-x2", "blur9"}
    with pytest.raises(UserError, match="bicubic-x4"):
        intermediate("bicubic-x3", hr)


@pytest.mark.parametrize("name", list(PRESETS))
def test_yaml_round_trip(name: str, tmp_path) -> None:
    path = tmp_path / f"{name}.yaml"
    save_preset(PRESETS[name], path)
    assert load_preset(path) == PRESETS[name]
    assert get_preset(str(path)) == PRESETS[name]


def test_hand_written_yaml(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nscale: 2\nsteps:\n"
        "  - blur: {kernel: gaussian, sigma: [1.0, 1.5]}\n"
        "  - resize: {method: decimate}\n"
        "  - noise: {kind: gaussian, sigma: [0, 0.01]}\n"
        "  - jpeg: {quality: [70, 90]}\n"
    )
    p = get_preset(str(path))
    assert p == Preset(
        name="mine",
        scale=2,
        steps=(
            Blur(kernel="gaussian", sigma=(1.0, 1.5)),
            Resize("decimate"),
            Noise(kind="gaussian", sigma=(0.0, 0.01)),
            Jpeg(quality=(70, 90)),
        ),
    )
    assert degrade(_rand_image(32, 32), p, seed=0).shape == (16, 16, 3)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("steps:\n  - blur: {kernel: uniform, size: 9, sigmaa: 2}\n", "sigmaa"),
        ("steps:\n  - sharpen: {}\n", "sharpen"),
        ("stepz: []\n", "stepz"),
        ("steps:\n  - blur: {kernel: box, size: 9}\n", "box"),
        ("steps:\n  - blur: {kernel: uniform, size: 8}\n", "size"),
        ("steps:\n  - jpeg: {quality: [90, 60]}\n", "quality"),
    ],
)
def test_bad_yaml_names_the_problem(tmp_path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=needle) as info:
        get_preset(str(path))
    assert str(path) in str(info.value)


def test_unknown_preset_lists_names() -> None:
    with pytest.raises(UserError) as info:
        get_preset("gaussian")
    for name in PRESETS:
        assert name in str(info.value)


def test_presets_table_lists_every_preset() -> None:
    table = presets_table()
    for name in PRESETS:
        assert f"`{name}`" in table
    assert "BSNR 40 dB" in table


def _write_inputs(folder, names=("a", "b")) -> None:
    for i, n in enumerate(names):
        write_image(folder / f"{n}.png", _rand_image(32, 40, seed=i))


def test_cli_degrade_sr_names_and_depth(tmp_path, capsys) -> None:
    src = tmp_path / "in"
    _write_inputs(src)
    rc = main(
        [
            "degrade",
            "--preset",
            "gaussian-aniso",
            "--scale",
            "2",
            "--seed",
            "1",
            str(src),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["ax2.png", "bx2.png"]
    with Image.open(tmp_path / "out" / "ax2.png") as im:
        assert im.mode == "RGB" and im.size == (20, 16)
    # one file alone gives the same output as within the folder (per-name seeds)
    main(
        [
            "degrade",
            "--preset",
            "gaussian-aniso",
            "--scale",
            "2",
            "--seed",
            "1",
            str(src / "a.png"),
            "--out",
            str(tmp_path / "one"),
        ]
    )
    a_all, _ = read_image(tmp_path / "out" / "ax2.png")
    a_one, _ = read_image(tmp_path / "one" / "ax2.png")
    np.testing.assert_array_equal(a_all, a_one)
    assert "wrote 2 image(s)" in capsys.readouterr().out


def test_cli_degrade_blur_writes_16_bit(tmp_path) -> None:
    src = tmp_path / "in"
    _write_inputs(src, names=("c",))
    assert main(["degrade", "--preset", "blur9", str(src), "--out", str(tmp_path / "o")]) == 0
    out = tmp_path / "o" / "c.png"
    img, info = read_image(out)
    assert info.bit_depth == 16 and img.shape == (32, 40, 3)
    ref, _ = read_image(src / "c.png")
    expected = degrade(ref, "blur9", seed=_seed_of("c"))
    np.testing.assert_allclose(img, expected, atol=0.5 / 65535 + 1e-6)


def _seed_of(stem: str) -> int:
    from twostage.ops.degrade import derive_seed

    return derive_seed(0, stem)


@pytest.mark.parametrize("args", [["--preset", "nope"], ["--preset", "blur9", "--scale", "4"]])
def test_cli_degrade_errors_are_one_line(tmp_path, capsys, args) -> None:
    src = tmp_path / "in"
    _write_inputs(src, names=("d",))
    rc = main(["degrade", *args, str(src), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("twostage: error:") and err.count("\n") == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_an_output_folder_name_over_255_bytes_is_one_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "a.png"
    write_image(photo, _rand_image(16, 16))
    out = tmp_path / ("d" * 300)
    assert main(["degrade", str(photo), "--preset", "bicubic", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(out) in err[0] and "300 bytes" in err[0]


def test_a_file_name_that_is_not_utf8_is_degraded_and_named_the_same(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import os

    folder = os.fsencode(tmp_path / "in")
    os.mkdir(folder)
    name = os.fsdecode(b"x\xff")
    write_image(tmp_path / "in" / f"{name}.png", _rand_image(16, 16))
    out = tmp_path / "out"
    assert main(["degrade", str(tmp_path / "in"), "--preset", "bicubic", "--out", str(out)]) == 0
    assert os.listdir(os.fsencode(out)) == [b"x\xffx4.png"]
    from twostage.ops.degrade import derive_seed

    assert derive_seed(0, name) != derive_seed(0, "x")


@pytest.mark.parametrize("sigma", [0.01, 1e-300])
def test_a_sigma_far_below_a_pixel_is_no_blur_even_before_decimation(sigma: float) -> None:
    hr = _rand_image(32, 32, seed=3).astype(np.float64)
    tiny = preset_from_dict(
        {
            "scale": 4,
            "steps": [
                {"blur": {"kernel": "gaussian-aniso", "sigma": sigma}},
                {"resize": {"method": "decimate"}},
            ],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 in the kernel
        lr = degrade(hr, tiny, seed=0)
    # LR pixel i sits at HR 4i + 1.5: a vanishing blur leaves the mean of the two nearest pixels
    # in each axis there (the limit of any point-sampled Gaussian centred between them)
    near = (hr[1::4] + hr[2::4])[:, 1::4] + (hr[1::4] + hr[2::4])[:, 2::4]
    np.testing.assert_allclose(lr, np.floor(near / 4 * 255 + 0.5) / 255, atol=1e-6)
    k = gaussian_kernel(5, 1e-3, 2e-3, angle=0.3)
    np.testing.assert_array_equal(k, np.pad([[1.0]], 2))  # centred: a delta


@pytest.mark.parametrize("radius", [0.001, 1e-10, 1e-300])
def test_a_disk_radius_far_below_a_pixel_is_no_blur_even_before_decimation(radius: float) -> None:
    """No supersample point lay inside such a disk: the kernel summed to 0 (a black image)."""
    hr = _rand_image(32, 32, seed=3).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 in the kernel
        same = degrade(
            hr,
            preset_from_dict({"steps": [{"blur": {"kernel": "disk", "radius": radius}}]}),
            seed=0,
        )
        steps = [{"blur": {"kernel": "disk", "radius": radius}}, {"resize": {"method": "decimate"}}]
        lr = degrade(hr, preset_from_dict({"scale": 4, "steps": steps}), seed=0)
    np.testing.assert_allclose(same, np.floor(hr * 255 + 0.5) / 255, atol=1e-6)
    # LR pixel i sits at HR 4i + 1.5: the limit is the mean of the two nearest pixels each way
    near = (hr[1::4] + hr[2::4])[:, 1::4] + (hr[1::4] + hr[2::4])[:, 2::4]
    np.testing.assert_allclose(lr, np.floor(near / 4 * 255 + 0.5) / 255, atol=1e-6)
    np.testing.assert_array_equal(disk_kernel(radius), np.pad([[1.0]], 1))  # centred: a delta
    k = disk_kernel(radius, 0.5)  # centred between four taps: a quarter on each
    c = k.shape[0] // 2
    assert k.sum() == 1 and (k[c : c + 2, c : c + 2] == 0.25).all()


@pytest.mark.parametrize(
    ("noise", "needle"),
    [
        ({"kind": "bsnr", "bsnr": 100000}, "bsnr must be a number of dB from -200 to 200"),
        ({"kind": "bsnr", "bsnr": -100000}, "bsnr must be a number of dB from -200 to 200"),
        ({"kind": "poisson-gaussian", "gain": 1e-30}, r"gain must be 0 .* at least 1e-12"),
        ({"kind": "poisson-gaussian", "gain": [1e-30, 1e-3]}, "gain must be 0"),
    ],
)
def test_noise_past_the_numeric_range_is_refused_naming_the_field(noise, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match=rf"my\.yaml: step 1: noise step: {needle}"):
        preset_from_dict({"steps": [{"noise": noise}]}, source="my.yaml")


def test_poisson_gain_from_zero_and_extreme_bsnr_within_range_are_well_defined() -> None:
    img = _rand_image(16, 16)
    for noise in (
        Noise(kind="poisson-gaussian", gain=(0.0, 1e-3)),
        Noise(kind="bsnr", bsnr=200),
        Noise(kind="bsnr", bsnr=-200),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = degrade(img, Preset(name="n", steps=(noise,), scale=1), seed=1)
        assert np.isfinite(out).all() and 0 <= out.min() <= out.max() <= 1


def test_a_motion_blur_scaled_past_the_kernel_cap_is_refused() -> None:
    preset = preset_from_dict(
        {
            "scale": 16,
            "steps": [
                {"blur": {"kernel": "motion", "length": 40, "reference_scale": 1}},
                {"resize": {}},
            ],
        }
    )
    with pytest.raises(UserError, match=r"kernel would be \d+×\d+ pixels \(at most 255\).*length"):
        degrade(np.zeros((32, 32, 3)), preset, seed=0)


# ------------------------ outputs never replace inputs; bad sizes and files are refused by name


def test_degrade_never_writes_over_its_input_even_with_overwrite(
    tmp_path: Path, photo_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str]]
) -> None:
    d = tmp_path / "d"
    good = photo_file(d)
    before = good.read_bytes()
    code, err = run_cli("degrade", "--preset", "blur9", str(good), "--out", str(d))
    assert code == 2 and "is the input" in err and err.count("\n") == 1
    code, err = run_cli("degrade", "--preset", "blur9", str(good), "--out", str(d), "--overwrite")
    assert code == 2 and "is the input" in err
    assert good.read_bytes() == before


def test_degrade_keeps_existing_outputs_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], photo_file: Callable[..., Path]
) -> None:
    good = photo_file(tmp_path / "in", size=(32, 32))
    out = tmp_path / "out"
    out.mkdir()
    (out / "goodx4.png").write_bytes(b"mine")
    assert main(["degrade", "--preset", "bicubic", str(good), "--out", str(out)]) == 0
    assert "goodx4.png exists (--overwrite" in capsys.readouterr().err
    assert (out / "goodx4.png").read_bytes() == b"mine"
    args = ["degrade", "--preset", "bicubic", str(good), "--out", str(out), "--overwrite"]
    assert main(args) == 0
    assert read_image(out / "goodx4.png")[0].shape == (8, 8, 3)


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"kernel": "uniform", "size": 100001}, "size must be an odd integer from 1 to 255"),
        ({"kernel": "gaussian", "sigma": 1e6}, "sigma must satisfy"),
        ({"kernel": "disk", "radius": [1, 1e5]}, "radius must satisfy"),
    ],
)
def test_absurd_blur_sizes_are_refused_by_name(fields: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        Blur(**fields)


def test_blur_kernel_grown_by_scale_is_refused(
    tmp_path: Path, photo_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str]]
) -> None:
    preset = tmp_path / "wide.yaml"
    preset.write_text(
        "steps:\n- blur: {kernel: gaussian, sigma: 40, reference_scale: 1}\n- resize: {}\n"
    )
    photo = photo_file(tmp_path / "in", size=(32, 32))
    for scale, needle in (
        ("4", "the kernel would be 961×961 pixels (at most 255)"),
        ("1000", "--scale must be an integer from 1 to 16, got 1000"),
    ):
        code, err = run_cli(
            "degrade",
            "--preset",
            str(preset),
            "--scale",
            scale,
            str(photo),
            "--out",
            str(tmp_path / "o"),
        )
        assert code == 2 and needle in err and err.count("\n") == 1


def test_degrade_names_bad_files_and_carries_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], photo_file: Callable[..., Path]
) -> None:
    d = tmp_path / "in"
    tiny = photo_file(d, "tiny.png", size=(1, 1))
    broken = d / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = photo_file(d, "good.png", size=(32, 32))
    out = tmp_path / "out"
    code = main(
        ["degrade", "--preset", "bicubic", str(tiny), str(broken), str(good), "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert f"error: {tiny}: a 1×1 image is too small for ×4" in captured.err
    assert f"cannot read image {broken}" in captured.err
    assert "wrote 1 image(s)" in captured.out and "2 failed" in captured.out
    assert [p.name for p in out.iterdir()] == ["goodx4.png"]
