"""The `realistic` family: seeding per (seed, iteration, sample), kernels, resizers, noise."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from twostage.cli import main
from twostage.errors import UserError
from twostage.limits import MAX_NOISE_SIGMA, MAX_POISSON_SCALE
from twostage.ops.degrade import PRESETS, degrade, gaussian_kernel, get_preset, preset_from_dict
from twostage.ops.imageio import read_image, write_image
from twostage.ops.realistic import (
    REALISTIC,
    Realistic,
    _Draw,
    _filter,
    _noise,
    _resize,
    degrade_batch,
    draw_kernel,
    shaped_kernel,
    sinc_kernel,
)
from twostage.ops.resize import imresize


@pytest.fixture(scope="module")
def patches() -> torch.Tensor:
    """Four 64² crops of astronaut as an HR batch."""
    img = skimage.data.astronaut().astype(np.float32) / 255.0
    crops = [img[y : y + 64, x : x + 64] for y, x in ((100, 150), (300, 50), (20, 400), (0, 0))]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def test_same_seeds_give_identical_bytes(patches: torch.Tensor) -> None:
    a = degrade_batch(patches, scale=4, seed=7, iteration=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        b = degrade_batch(patches.clone(), scale=4, seed=7, iteration=3)
    finally:
        torch.set_num_threads(threads)
    assert a.dtype == torch.float32 and a.shape == (4, 3, 16, 16)
    assert a.numpy().tobytes() == b.numpy().tobytes()


def test_a_sample_does_not_depend_on_its_batch(patches: torch.Tensor) -> None:
    whole = degrade_batch(patches, scale=4, seed=7, iteration=3)
    for i in range(4):
        alone = degrade_batch(patches[i : i + 1], scale=4, seed=7, iteration=3, first_index=i)
        assert torch.equal(alone[0], whole[i])
    pair = degrade_batch(patches[1:3], scale=4, seed=7, iteration=3, first_index=1)
    assert torch.equal(pair, whole[1:3])


def test_index_iteration_and_seed_each_change_the_degradation(patches: torch.Tensor) -> None:
    same = patches[:1].expand(4, -1, -1, -1).contiguous()
    out = degrade_batch(same, scale=4, seed=7, iteration=3)
    for i in range(4):
        for j in range(i):
            assert not torch.equal(out[i], out[j])  # afresh for every sample
    assert not torch.equal(degrade_batch(same[:1], scale=4, seed=7, iteration=4)[0], out[0])
    assert not torch.equal(degrade_batch(same[:1], scale=4, seed=8, iteration=3)[0], out[0])


@pytest.mark.parametrize("scale", [2, 4])
def test_output_size_grid_and_brightness(patches: torch.Tensor, scale: int) -> None:
    out = degrade_batch(patches, scale=scale, seed=1, iteration=0)
    assert out.shape == (4, 3, 64 // scale, 64 // scale)
    levels = out.numpy() * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # on the uint8 grid
    assert out.min() >= 0 and out.max() <= 1
    # blur, resize, noise and JPEG keep the mean level (up to clipping and noise)
    base = F.avg_pool2d(patches, scale)
    np.testing.assert_allclose(out.mean((1, 2, 3)), base.mean((1, 2, 3)), atol=0.04)
    assert (out - base).abs().mean() > 2 / 255  # and it really degraded


def test_bad_batches_are_user_errors(patches: torch.Tensor) -> None:
    with pytest.raises(UserError, match="multiple"):
        degrade_batch(patches[:, :, :62], scale=4, seed=0)
    with pytest.raises(UserError, match="N×3×H×W"):
        degrade_batch(patches[:, :2], scale=4, seed=0)
    with pytest.raises(UserError, match=">= 0"):
        degrade_batch(patches, scale=4, seed=-1)


def test_gaussian_kernels_agree_with_the_preset_kernels() -> None:
    for size, s1, s2, theta in ((21, 3.0, 0.7, 1.0), (7, 0.5, 0.5, 0.0), (15, 2.0, 1.2, -2.5)):
        np.testing.assert_allclose(
            shaped_kernel(size, s1, s2, theta), gaussian_kernel(size, s1, s2, theta), atol=1e-12
        )
    # β = 1 makes the generalized Gaussian the Gaussian
    np.testing.assert_allclose(
        shaped_kernel(13, 2.0, 1.0, 0.4, profile="generalized", beta=1.0),
        shaped_kernel(13, 2.0, 1.0, 0.4),
        atol=1e-12,
    )


def test_plateau_and_generalized_profiles() -> None:
    c = 10
    plateau = shaped_kernel(21, 2.0, 2.0, profile="plateau", beta=1.5)
    # 1 / (1 + q^β) with q = r²/σ²: the value at r = 2 (q = 1) is half the centre's
    assert plateau[c, c + 2] / plateau[c, c] == pytest.approx(0.5)
    gen = shaped_kernel(21, 2.0, 2.0, profile="generalized", beta=0.5)
    assert gen[c, c + 4] / gen[c, c] == pytest.approx(math.exp(-0.5 * 4.0**0.5))
    assert gen[c, c + 10] > shaped_kernel(21, 2.0, 2.0)[c, c + 10]  # β < 1: heavier tails


def test_sinc_kernel_is_a_low_pass_at_its_cutoff() -> None:
    k = sinc_kernel(21, math.pi / 2)
    assert k.sum() == pytest.approx(1.0)
    response = np.abs(np.fft.fft(k.sum(axis=0), 256))  # along x, through the centre
    freq = np.fft.fftfreq(256) * 2 * math.pi
    passband, stopband = np.abs(freq) < 0.4 * math.pi, np.abs(freq) > 0.6 * math.pi
    assert response[passband].min() > 0.8 and response[passband].max() < 1.1  # ripple of 21 taps
    assert response[stopband].max() < 0.1


def test_drawn_kernels_are_odd_normalised_and_point_symmetric() -> None:
    sizes = set()
    for seed in range(60):
        for second in (False, True):
            k = draw_kernel(np.random.default_rng(seed), REALISTIC, second)
            sizes.add(k.shape[0])
            assert k.shape[0] == k.shape[1] and 7 <= k.shape[0] <= 21 and k.shape[0] % 2 == 1
            assert k.sum() == pytest.approx(1.0, abs=1e-9)
            np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)  # correlation = convolution
    assert sizes == set(range(7, 22, 2))


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(7, 9), (19, 40), (64, 64), (90, 123)])
def test_resize_is_torch_interpolate(mode: str, size: tuple[int, int]) -> None:
    x = np.random.default_rng(0).random((3, 50, 61), dtype=np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], size=size, mode=mode)[0].numpy()
    np.testing.assert_allclose(_resize(x, size, mode), ref, atol=3e-5)


def _draw(gaussian: bool, level: float, gray: bool) -> _Draw:
    return _Draw(None, 1.0, "area", gaussian, level, gray, 90)


def test_gaussian_noise_level_and_gray() -> None:
    flat = np.full((3, 128, 128), 0.5, dtype=np.float32)
    rng = np.random.default_rng(0)
    colour = _noise(flat, _draw(True, 20 / 255, False), rng) - 0.5
    assert colour.std() == pytest.approx(20 / 255, rel=0.03)
    assert abs(np.corrcoef(colour[0].ravel(), colour[1].ravel())[0, 1]) < 0.05
    gray = _noise(flat, _draw(True, 20 / 255, True), rng)
    np.testing.assert_array_equal(gray[0], gray[2])


def test_poisson_noise_variance_follows_the_signal() -> None:
    # 2^⌈log2 #levels⌉ counts per unit: with 2 grey levels, 2 counts; variance level²·x/2
    img = np.zeros((3, 128, 256), dtype=np.float32)
    img[:, :, 128:] = 200 / 255
    out = _noise(img, _draw(False, 0.1, False), np.random.default_rng(0))
    dark, bright = out[:, :, :128], out[:, :, 128:]
    assert dark.max() == 0.0  # Poisson(0) = 0: no noise on black
    expected = 0.1**2 * (200 / 255) / 2
    assert bright.var() == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("kernel_prob", (0.5, 0.5, 0.0, 0.0, 0.0, 0.1), "sum to 1"),
        ("noise_range", (30.0, 1.0), "low <= high"),
        ("jpeg_range", (30, 101), "100"),
        ("kernel_size", (7, 20), "odd"),
        ("gaussian_noise_prob", 1.5, "probability"),
        ("resize_prob2", (0.5, 0.5), "3 number"),
    ],
)
def test_bad_ranges_name_the_field(field: str, value: object, needle: str) -> None:
    with pytest.raises(UserError, match=needle) as info:
        Realistic(**{field: value})
    assert field in str(info.value)


def test_realistic_preset_in_yaml(tmp_path) -> None:
    path = tmp_path / "mild.yaml"
    path.write_text(
        "name: mild\nsteps:\n  - realistic: {noise_range: [1, 10], jpeg_range2: [60, 95]}\n"
    )
    p = get_preset(str(path))
    assert p.scale == 4 and p.steps == (Realistic(noise_range=(1.0, 10.0), jpeg_range2=(60, 95)),)
    hr = np.random.default_rng(0).random((64, 48, 3))
    assert degrade(hr, p, seed=0).shape == (16, 12, 3)


def test_degrade_preset_matches_the_batch_function() -> None:
    hr = imresize(skimage.data.chelsea().astype(np.float64) / 255.0, size=(64, 80)).clip(0, 1)
    out = degrade(hr, "realistic", scale=2, seed=5)
    assert out.shape == (32, 40, 3)
    seed = int(np.random.default_rng(5).integers(2**63))  # the preset's one draw
    t = torch.from_numpy(hr.astype(np.float32)).permute(2, 0, 1)[None]
    ref = degrade_batch(t, scale=2, seed=seed, family=PRESETS["realistic"].steps[0])
    np.testing.assert_array_equal(out, ref[0].permute(1, 2, 0).numpy())


def test_cli_degrade_realistic(tmp_path) -> None:
    src = tmp_path / "in"
    img = skimage.data.astronaut()[::4, ::4]
    write_image(src / "a.png", img.astype(np.float32) / 255.0)
    for out in ("o1", "o2"):
        args = ["degrade", "--preset", "realistic", "--seed", "3", str(src), "--out"]
        assert main([*args, str(tmp_path / out)]) == 0
    a, info = read_image(tmp_path / "o1" / "ax4.png")
    b, _ = read_image(tmp_path / "o2" / "ax4.png")
    assert a.shape == (32, 32, 3) and info.bit_depth == 8
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("h", "w", "k"), [(40, 33, 21), (9, 12, 21), (64, 64, 7)])
def test_filter_is_a_reflect_padded_correlation(h: int, w: int, k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.random((3, h, w), dtype=np.float32)
    kernel = rng.random((k, k))
    kernel /= kernel.sum()
    p = k // 2
    padded = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p)), mode="reflect")
    expected = np.stack(
        [
            [[(padded[c, i : i + k, j : j + k] * kernel).sum() for j in range(w)] for i in range(h)]
            for c in range(3)
        ]
    )
    np.testing.assert_allclose(_filter(x, kernel), expected, atol=2e-6)


def test_mixture_shares_clean_and_plain_samples(patches: torch.Tensor) -> None:
    """realistic-mix: clean samples are exactly the final resize, plain ones keep blur and
    resizes but add no noise (the same draws, so plain = full minus noise and JPEG), and
    Real-ESRGAN's own family draws nothing for the mixture (its bytes are unchanged)."""
    from twostage.ops.realistic import _draw_plan, _one

    mix = PRESETS["realistic-mix"].steps[0]
    assert (mix.clean_prob, mix.plain_prob) == (0.15, 0.25)
    plans = [_draw_plan(np.random.default_rng([3, it, 0]), mix) for it in range(400)]
    shares = {m: sum(p.mix == m for p in plans) / len(plans) for m in ("clean", "plain", "full")}
    assert shares["clean"] == pytest.approx(0.15, abs=0.05)
    assert shares["plain"] == pytest.approx(0.25, abs=0.06)
    x = patches[0].numpy()
    clean = next(p for p in plans if p.mix == "clean")
    want = np.floor(np.clip(_resize(x, (16, 16), clean.final_mode), 0, 1) * 255 + 0.5) / 255
    got = _one(x, clean, np.random.default_rng(0), scale=4)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    plain = next(p for p in plans if p.mix == "plain")
    a = _one(x, plain, np.random.default_rng(0), scale=4)
    b = _one(x, plain, np.random.default_rng(1), scale=4)  # no noise: the rng is not read
    np.testing.assert_array_equal(a, b)
    with pytest.raises(UserError, match="clean_prob \\+ plain_prob"):
        Realistic(clean_prob=0.6, plain_prob=0.5)
    rng = np.random.default_rng([0, 0, 0])
    _draw_plan(rng, REALISTIC)
    after = np.random.default_rng([0, 0, 0])
    _draw_plan(after, Realistic(clean_prob=0.0))
    assert rng.random() == after.random()


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"kernel_size": [20001, 20001]}, "kernel_size must be odd sizes of at most 255"),
        ({"kernel_size": [7, 257]}, "kernel_size must be odd sizes of at most 255"),
        ({"resize_range": [0.5, 2000]}, "resize_range: resize factors must be > 0 and at most 4"),
        ({"resize_range2": [0.3, 5]}, "resize_range2: resize factors must be > 0 and at most"),
        ({"blur_sigma": [0, 0]}, "blur_sigma must be > 0"),
        ({"sinc_cutoff": [0, 1]}, "sinc_cutoff must be > 0"),
    ],
)
def test_sizes_past_the_caps_are_refused_in_a_preset_naming_the_field(fields, needle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match=rf"big\.yaml: step 1: realistic step: {needle}"):
        preset_from_dict({"steps": [{"realistic": fields}]}, source="big.yaml")


def _photo(side: int) -> np.ndarray:
    return skimage.data.astronaut()[100 : 100 + side, 200 : 200 + side].astype(np.float32) / 255


@pytest.mark.parametrize(
    ("name", "cap"),
    [
        ("noise_range", MAX_NOISE_SIGMA),
        ("noise_range2", MAX_NOISE_SIGMA),
        ("poisson_scale_range", MAX_POISSON_SCALE),
        ("poisson_scale_range2", MAX_POISSON_SCALE),
    ],
)
def test_noise_levels_past_the_caps_are_refused_naming_the_field(name: str, cap: int) -> None:
    """[1e300, 1e308] overflowed numpy's noise (raw warnings) and still exited 0."""
    for high in (1e308, cap * 1.01):
        with pytest.raises(UserError, match=rf"step 1: realistic step: {name} must be at most"):
            preset_from_dict({"steps": [{"realistic": {name: [1.0, high]}}]}, source="big.yaml")
    at_cap = preset_from_dict({"scale": 4, "steps": [{"realistic": {name: [cap, cap]}}]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow at the cap
        lr = degrade(_photo(32), at_cap, seed=0)
    assert lr.shape == (8, 8, 3) and np.isfinite(lr).all()


def test_a_noise_range_past_the_cap_is_a_one_line_cli_error(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    preset = tmp_path / "noisy.yaml"
    preset.write_text("steps: [{realistic: {noise_range: [1e300, 1e308]}}]\n")
    image = tmp_path / "in.png"
    write_image(image, _photo(32))
    out = tmp_path / "out"
    code = main(["degrade", "--preset", str(preset), "--scale", "4", str(image), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "noise_range must be at most 255" in err and err.count("\n") == 1
    assert not out.exists()
