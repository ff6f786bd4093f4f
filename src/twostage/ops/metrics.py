"""PSNR, SSIM and LPIPS exactly as the SR literature reports them (BasicSR / MATLAB conventions).

- Both images are rounded to uint8 first (floor(x·255 + 0.5)): the score is that of the saved
  image, and results are comparable with papers that evaluate PNG files.
- Computed on [0, 255] in float64, after cropping `crop_border` pixels at every side (the
  scale, by convention: the border pixels of an upscaled image are meaningless).
- PSNR is capped at `PSNR_CEILING` (100 dB, the convention of EDSR-era SR code): identical
  images score 100 dB, not inf, so one identical pair cannot make a mean infinite. A differing
  pair reaches the cap only when its MSE is under 6.5e-6 (less than one 8-bit step in 150,000
  samples), far above any SR result.
- RGB by default (the paper); `y_channel=True` uses BT.601 luma as BasicSR's
  `rgb2ycbcr(y_only=True)`: Y = (65.481·R + 128.553·G + 24.966·B)/255 + 16 on [0, 255] values.
- SSIM: Gaussian window 11×11, σ = 1.5, C1 = (0.01·255)², C2 = (0.03·255)², statistics on the
  'valid' region only (no padding), mean over the SSIM map, then over channels.
- LPIPS: the official `lpips` package v0.1 (AlexNet or VGG), inputs scaled to [-1, 1].
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import correlate1d

from twostage.errors import UserError
from twostage.ops.imageio import to_uint8

__all__ = ["PSNR_CEILING", "Lpips", "gaussian_window", "psnr", "rgb_to_y", "ssim"]

PSNR_CEILING = 100.0  # dB: the PSNR of identical images (and the most any pair scores)

LPIPS_INSTALL_HINT = (
    "pip install torchvision lpips==0.1.4 (the optional extra twostage[lpips] plus torchvision)"
)
# ImageNet backbones lpips builds through torchvision; their weights must already be in the
# torch hub cache: we never download at run time.
_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
_BACKBONE_BUILDERS = {"alex": "alexnet", "vgg": "vgg16"}


def _prepare(
    pred: np.ndarray, gt: np.ndarray, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """uint8-rounded, cropped, optionally Y, float64 [0, 255] H×W×C arrays."""
    a = to_uint8(np.asarray(pred))
    b = to_uint8(np.asarray(gt))
    if a.shape != b.shape:
        raise UserError(f"cannot compare images of different sizes {a.shape} and {b.shape}")
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected H×W×C images, got shape {a.shape}")
    if crop_border < 0:
        raise UserError(f"crop border must be >= 0, got {crop_border}")
    if crop_border:
        if a.shape[0] <= 2 * crop_border or a.shape[1] <= 2 * crop_border:
            raise UserError(
                f"crop border {crop_border} leaves nothing of a {a.shape[0]}x{a.shape[1]} image"
            )
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    if y_channel:
        if a.shape[2] != 3:
            raise ValueError("y_channel needs RGB images")
        a64, b64 = rgb_to_y(a64)[:, :, None], rgb_to_y(b64)[:, :, None]
    return a64, b64


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image in [0, 255] → Y in [16, 235] (BasicSR's y_only, float64).

    BasicSR gets there in float32 ((rgb/255)·coef + 16, /255, ·255); this float64 version
    differs from it by rounding only (~1e-5 on Y).
    """
    coef = np.array([65.481, 128.553, 24.966])
    return np.asarray(rgb, dtype=np.float64) @ coef / 255.0 + 16.0


def psnr(
    pred: np.ndarray, gt: np.ndarray, *, crop_border: int = 0, y_channel: bool = False
) -> float:
    """Peak signal-to-noise ratio in dB on [0, 255], at most PSNR_CEILING (identical images
    score the ceiling: a mean over images stays finite)."""
    a, b = _prepare(pred, gt, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return PSNR_CEILING
    return min(PSNR_CEILING, 10.0 * math.log10(255.0 * 255.0 / mse))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian (OpenCV's getGaussianKernel(size, sigma), float64)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with g⊗g keeping only the 'valid' region (no padding)."""
    r = g.size // 2
    # The border mode only affects the r pixels at each side, which the crop removes.
    out = correlate1d(correlate1d(img, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return out[r:-r, r:-r]


def _ssim_channel(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> float:
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(
    pred: np.ndarray, gt: np.ndarray, *, crop_border: int = 0, y_channel: bool = False
) -> float:
    """Structural similarity (Wang et al. 2004) as BasicSR/MATLAB: mean over channels."""
    a, b = _prepare(pred, gt, crop_border, y_channel)
    g = gaussian_window(11, 1.5)
    if a.shape[0] < g.size or a.shape[1] < g.size:
        h, w = a.shape[:2]
        raise UserError(f"SSIM needs images of at least 11x11 pixels, got {h}x{w}")
    return float(np.mean([_ssim_channel(a[:, :, c], b[:, :, c], g) for c in range(a.shape[2])]))


def _to_lpips_input(img: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """[0, 1] image → N×3×H×W float32 tensor in [-1, 1]. Numpy images are uint8-rounded first,
    like PSNR/SSIM (the score of the saved image)."""
    if isinstance(img, torch.Tensor):
        t = img.to(device=device, dtype=torch.float32)
        if t.ndim == 3:
            t = t[None]
    else:
        u8 = to_uint8(np.asarray(img))
        if u8.ndim != 3 or u8.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 image, got shape {u8.shape}")
        t = torch.from_numpy(np.ascontiguousarray(u8.transpose(2, 0, 1))).to(device)[None]
        t = t.to(torch.float32) / 255.0
    return t * 2.0 - 1.0


class Lpips:
    """LPIPS distance (Zhang et al. 2018) through the official `lpips` package, v0.1.

    `Lpips("alex")` or `Lpips("vgg")`; calling it on two [0, 1] images (H×W×3 numpy or
    N×3×H×W tensors) returns the mean distance. Needs torchvision and lpips (optional extra),
    and the torchvision ImageNet backbone weights already in the torch hub cache.
    """

    def __init__(
        self, net: str = "alex", *, device: str | torch.device = "cpu", pretrained: bool = True
    ) -> None:
        if net not in _BACKBONE_FILES:
            raise UserError(f"unknown LPIPS network {net!r} (use alex or vgg)")
        try:
            import lpips as lpips_package
        except ImportError as exc:
            hint = LPIPS_INSTALL_HINT
            raise UserError(f"LPIPS needs lpips and torchvision ({exc}): {hint}") from None
        if pretrained:
            weights = Path(torch.hub.get_dir()) / "checkpoints" / _BACKBONE_FILES[net]
            if not weights.is_file():
                builder = _BACKBONE_BUILDERS[net]
                raise UserError(
                    f"LPIPS-{net} needs the torchvision ImageNet weights {weights}, which are "
                    f'never downloaded at run time; fetch them once with: python -c "import '
                    f"torchvision; torchvision.models.{builder}(weights='IMAGENET1K_V1')\""
                )
        self.net = net
        self.device = torch.device(device)
        model = lpips_package.LPIPS(net=net, version="0.1", pretrained=pretrained, verbose=False)
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float:
        a = _to_lpips_input(pred, self.device)
        b = _to_lpips_input(gt, self.device)
        if a.shape != b.shape:
            raise UserError(
                f"cannot compare images of different sizes {tuple(a.shape)} and {tuple(b.shape)}"
            )
        return float(self.model(a, b).mean().item())
