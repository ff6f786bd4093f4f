"""PSNR/SSIM against scikit-image and a plain-loop SSIM; LPIPS wrapper with a stand-in network."""

from __future__ import annotations

import math
import sys
import types
from typing import ClassVar

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from twostage.errors import UserError
from twostage.ops import metrics
from twostage.ops.metrics import Lpips, psnr, rgb_to_y, ssim


def _pair(shape=(40, 37, 3), noise=20, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, shape, dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255)
    return pred.astype(np.uint8), gt


@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_matches_skimage(crop):
    pred, gt = _pair()
    c = slice(crop, -crop) if crop else slice(None)
    expected = peak_signal_noise_ratio(gt[c, c], pred[c, c], data_range=255)
    assert psnr(pred, gt, crop_border=crop) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("crop", [0, 3])
def test_ssim_matches_skimage(crop, skimage_ssim):
    pred, gt = _pair(seed=1)
    c = slice(crop, -crop) if crop else slice(None)
    assert ssim(pred, gt, crop_border=crop) == pytest.approx(
        skimage_ssim(pred[c, c], gt[c, c]), abs=1e-6
    )


def _loop_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of one channel from the definition: every 11×11 window fully inside the image."""
    x = np.arange(11) - 5
    g1 = [math.exp(-(v * v) / (2 * 1.5**2)) for v in x]
    total = sum(g1)
    w = [[gi * gj / total**2 for gj in g1] for gi in g1]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            ma = mb = saa = sbb = sab = 0.0
            for p in range(11):
                for q in range(11):
                    va, vb, wt = float(a[i + p, j + q]), float(b[i + p, j + q]), w[p][q]
                    ma += wt * va
                    mb += wt * vb
                    saa += wt * va * va
                    sbb += wt * vb * vb
                    sab += wt * va * vb
            va_, vb_, cov = saa - ma * ma, sbb - mb * mb, sab - ma * mb
            vals.append(
                ((2 * ma * mb + c1) * (2 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va_ + vb_ + c2))
            )
    return sum(vals) / len(vals)


def test_ssim_matches_plain_definition():
    pred, gt = _pair(shape=(14, 13, 3), noise=40, seed=2)
    expected = np.mean([_loop_ssim(pred[..., c], gt[..., c]) for c in range(3)])
    assert ssim(pred, gt) == pytest.approx(expected, abs=1e-10)


def test_y_channel_is_basicsr_bt601(skimage_ssim):
    pred, gt = _pair(seed=3)

    # Y written out per pixel: 16 + (65.481 R + 128.553 G + 24.966 B) / 255.
    def y(img):
        return 16 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0

    ya, yb = y(pred.astype(np.float64)), y(gt.astype(np.float64))
    assert rgb_to_y(np.array([255.0, 255.0, 255.0])) == pytest.approx(235.0, abs=1e-9)
    assert rgb_to_y(np.zeros(3)) == 16.0
    assert psnr(pred, gt, y_channel=True, crop_border=2) == pytest.approx(
        peak_signal_noise_ratio(yb[2:-2, 2:-2], ya[2:-2, 2:-2], data_range=255), abs=1e-6
    )
    assert ssim(pred, gt, y_channel=True) == pytest.approx(skimage_ssim(ya, yb), abs=1e-6)


def test_float_inputs_are_rounded_to_uint8_first():
    pred, gt = _pair(seed=4)
    # Within half a step of the uint8 values: the same scores as the uint8 images.
    jitter = np.random.default_rng(5).uniform(-0.49, 0.49, pred.shape)
    pred_f = (pred + jitter) / 255.0
    assert psnr(pred_f, gt) == psnr(pred, gt)
    assert ssim(pred_f, gt.astype(np.float32) / 255) == ssim(pred, gt)


def test_identical_images_score_the_psnr_ceiling_not_inf():
    _, gt = _pair(seed=6)
    assert psnr(gt, gt) == metrics.PSNR_CEILING == 100.0
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)


def test_psnr_is_capped_at_the_ceiling_and_exact_below_it():
    a = np.zeros((500, 500, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1  # MSE = 1/750000: 107 dB uncapped
    assert 10 * math.log10(255**2 * a.size) > 100 and psnr(a, b) == 100.0
    b[:10] = 1  # MSE = 0.02: 65.1 dB
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 0.02), abs=1e-9)


def test_known_psnr_value():
    # Every pixel off by exactly 1: MSE = 1, PSNR = 20·log10(255) = 48.1308...
    gt = np.full((12, 12, 3), 100, dtype=np.uint8)
    assert psnr(gt + 1, gt) == pytest.approx(20 * math.log10(255), abs=1e-12)


def test_size_and_border_errors():
    a, b = _pair(shape=(20, 20, 3))
    with pytest.raises(UserError, match="different sizes"):
        psnr(a, b[:10])
    with pytest.raises(UserError, match="leaves nothing"):
        psnr(a, b, crop_border=10)
    with pytest.raises(UserError, match="at least 11x11"):
        ssim(a, b, crop_border=5)


# ----------------------------------------------------------------------------- LPIPS


def test_lpips_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` raise ImportError
    with pytest.raises(UserError, match=r"pip install torchvision lpips==0\.1\.4"):
        Lpips("alex")


def test_lpips_unknown_network():
    with pytest.raises(UserError, match="unknown LPIPS network 'squeeze'"):
        Lpips("squeeze")


class _FakeLPIPS(torch.nn.Module):
    """Stands in for lpips.LPIPS: records how it was built and what it was given."""

    built: ClassVar[dict] = {}
    seen: ClassVar[list] = []

    def __init__(self, **kwargs):
        super().__init__()
        _FakeLPIPS.built = kwargs

    def forward(self, in0, in1):
        _FakeLPIPS.seen.append((in0.clone(), in1.clone(), self.training))
        return (in0 - in1).abs().mean(dim=(1, 2, 3), keepdim=True)


@pytest.fixture
def fake_lpips(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=_FakeLPIPS))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    _FakeLPIPS.seen = []
    return tmp_path


def test_lpips_refuses_to_download_backbone(fake_lpips):
    with pytest.raises(
        UserError,
        match=r"never downloaded.*alexnet-owt-7be5be79\.pth|"
        r"alexnet-owt-7be5be79\.pth.*never downloaded",
    ):
        Lpips("alex")
    (fake_lpips / "checkpoints").mkdir()
    (fake_lpips / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"")
    Lpips("vgg")
    assert _FakeLPIPS.built == {
        "net": "vgg",
        "version": "0.1",
        "pretrained": True,
        "verbose": False,
    }


def test_lpips_scales_inputs_to_minus_one_one(fake_lpips):
    lp = Lpips("alex", pretrained=False)
    assert _FakeLPIPS.built["net"] == "alex" and _FakeLPIPS.built["pretrained"] is False
    black = np.zeros((4, 5, 3), dtype=np.uint8)
    white = np.full((4, 5, 3), 255, dtype=np.uint8)
    gray = np.full((4, 5, 3), 0.5, dtype=np.float32)  # rounds to 128/255
    assert lp(black, white) == pytest.approx(2.0)
    in0, in1, training = _FakeLPIPS.seen[-1]
    assert in0.shape == (1, 3, 4, 5) and in0.dtype == torch.float32 and not training
    assert torch.all(in0 == -1) and torch.all(in1 == 1)
    lp(gray, black)
    assert torch.allclose(_FakeLPIPS.seen[-1][0], torch.tensor(128 / 255 * 2 - 1), atol=1e-6)
    # Tensors N×3×H×W in [0, 1] are taken as they are.
    t = torch.full((2, 3, 4, 5), 0.25)
    assert lp(t, t) == 0.0
    assert torch.allclose(_FakeLPIPS.seen[-1][0], torch.tensor(-0.5))
    with pytest.raises(UserError, match="different sizes"):
        lp(black, np.zeros((4, 4, 3), dtype=np.uint8))


def test_lpips_hint_names_extra():
    assert "twostage[lpips]" in metrics.LPIPS_INSTALL_HINT
