"""The held-out generalization suite: names, determinism, and what each entry does."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import skimage.data
from PIL import Image

from twostage.ops.degrade import (
    PRESETS,
    SUITE,
    Blur,
    convolve,
    degrade,
    derive_seed,
    disk_kernel,
    gaussian_kernel,
    intermediate,
    motion_kernel,
    sample_kernel,
)
from twostage.ops.resize import imresize

ISSUE_14 = (
    "bicubic",  # clean MATLAB bicubic
    "gauss2",  # Gaussian blur σ 2
    "defocus",  # defocus disk blur
    "motion",  # linear motion blur
    "noise20",  # Gaussian noise σ 20
    "camera",  # Poisson-Gaussian sensor noise
    "jpeg40",  # JPEG q 40
    "webp40",  # WebP
    "aniso-noise-jpeg",  # combined blur + noise + JPEG
)


@pytest.fixture(scope="module")
def hr() -> np.ndarray:
    """A 96×128 astronaut crop, on the uint8 grid like a real HR photo."""
    img = skimage.data.astronaut().astype(np.float64) / 255.0
    return np.round(imresize(img[:384, 64:448], size=(96, 128)).clip(0, 1) * 255) / 255


def test_the_suite_is_the_issues_nine_named_presets() -> None:
    assert tuple(SUITE) == ISSUE_14
    for name, unseen in SUITE.items():
        assert PRESETS[name].resizes and PRESETS[name].scale == 4
        assert unseen and "\n" not in unseen and len(unseen) < 160  # one line each
    for family in ("realistic", "realistic-mix"):  # trained on, never tested
        assert family in PRESETS and family not in SUITE


@pytest.mark.parametrize("name", list(SUITE))
def test_deterministic_per_image_and_seed_at_x4_and_x2(name: str, hr: np.ndarray) -> None:
    for scale in (4, 2):
        seed = derive_seed(0, f"photo-{scale}")
        a = degrade(hr, name, scale=scale, seed=seed)
        assert a.shape == (96 // scale, 128 // scale, 3)
        np.testing.assert_array_equal(a, degrade(hr, name, scale=scale, seed=seed))
        change = np.abs(a - intermediate(f"bicubic-x{scale}", hr)).mean()
        assert change == 0 if name == "bicubic" else change > 1 / 255


def _u8(x: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(x, 0, 1) * 255 + 0.5) / 255


def test_clean_bicubic_is_the_intermediate_domain(hr: np.ndarray) -> None:
    np.testing.assert_array_equal(degrade(hr, "bicubic", seed=1), intermediate("bicubic-x4", hr))


@pytest.mark.parametrize(
    ("name", "kernel"),
    [
        ("gauss2", gaussian_kernel(13, 2.0, 2.0, shift=-0.5)),
        ("defocus", disk_kernel(2.0, shift=-0.5)),
    ],
)
def test_fixed_blurs_are_the_documented_kernel_then_decimation(
    name: str, kernel: np.ndarray, hr: np.ndarray
) -> None:
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    expected = _u8(convolve(hr, kernel)[1::4, 1::4])  # LR pixel i at HR 4i + 1.5
    np.testing.assert_allclose(degrade(hr, name, seed=0), expected, atol=1e-6)


def test_motion_kernel_is_a_line() -> None:
    blur = PRESETS["motion"].steps[0]
    assert isinstance(blur, Blur)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        k = sample_kernel(blur, rng, scale=4)
        c = k.shape[0] // 2
        yy, xx = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
        cov = np.cov(np.stack([xx.ravel(), yy.ravel()]), aweights=k.ravel(), bias=True)
        minor, major = np.linalg.eigvalsh(cov)
        assert major == pytest.approx(9.0**2 / 12, rel=0.05)  # a uniform segment of 9 px
        assert minor < 0.2  # about one pixel wide: bilinear splatting only
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
    # half the length at ×2
    k2 = sample_kernel(blur, np.random.default_rng(0), scale=2)
    assert k2.shape[0] < k.shape[0]


def test_motion_kernel_points_along_its_angle() -> None:
    for theta in (0.0, math.pi / 6, math.pi / 2, 2.5):
        k = motion_kernel(11.0, theta)
        c = k.shape[0] // 2
        yy, xx = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
        cov = np.cov(np.stack([xx.ravel(), yy.ravel()]), aweights=k.ravel(), bias=True)
        _, vecs = np.linalg.eigh(cov)
        x, y = vecs[:, 1]
        assert abs(math.atan2(y, x) % math.pi - theta % math.pi) < 0.02


def test_noise20_adds_white_noise_of_sigma_20(hr: np.ndarray) -> None:
    flat = np.full((256, 256, 3), 0.5)
    noisy = degrade(flat, "noise20", seed=3)
    assert noisy.std() == pytest.approx(20 / 255, rel=0.03)
    # white: neighbouring LR pixels are uncorrelated
    d = noisy - 0.5
    assert abs(np.corrcoef(d[:, :-1].ravel(), d[:, 1:].ravel())[0, 1]) < 0.05


def _codec(img: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format=fmt, quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im.convert("RGB")) / 255.0


def test_jpeg40_and_webp40_are_their_codecs_and_differ(hr: np.ndarray) -> None:
    clean = intermediate("bicubic-x4", hr)
    jpeg, webp = degrade(hr, "jpeg40", seed=0), degrade(hr, "webp40", seed=0)
    np.testing.assert_allclose(jpeg, _codec(clean, "JPEG", 40), atol=1e-6)
    np.testing.assert_allclose(webp, _codec(clean, "WEBP", 40), atol=1e-6)
    assert np.abs(jpeg - webp).mean() > 1 / 255
    for out in (jpeg, webp):
        assert np.abs(out - clean).mean() > 1 / 255


def test_combined_entry_adds_noise_and_jpeg_to_the_paper_blur(hr: np.ndarray) -> None:
    blur_only = degrade(hr, "gaussian-aniso", seed=9)
    combined = degrade(hr, "aniso-noise-jpeg", seed=9)  # same seed: the same kernel
    residual = combined - blur_only
    assert 5 / 255 < residual.std() < 20 / 255  # noise σ 10 and JPEG 50 artefacts
    assert abs(residual.mean()) < 2 / 255
