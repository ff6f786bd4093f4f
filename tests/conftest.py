"""Fixtures several test files share: tiny profiles and networks, reference photos, the CLI.

Each is small enough for a 2-core CPU; files are generated in pytest's temporary folders.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from twostage.cli import main
from twostage.config import PROFILES, Profile
from twostage.data.samples import load_samples
from twostage.models import ModelSpec, build_model
from twostage.models.checkpoints import save_model
from twostage.ops.degrade import degrade, derive_seed, get_preset
from twostage.ops.resize import imresize


@pytest.fixture(scope="session")
def tiny_profile() -> Profile:
    """The `tiny` run profile cut to 2 iterations, 32-pixel crops, 2 train and 1 test photo."""
    return dataclasses.replace(
        PROFILES["tiny"], iterations=2, hr_crop=32, train_images=2, test_images=1
    )


def _degraded_test_photos(
    profile: Profile, degradation: str, scale: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(HR uint8, degraded input) of the embedded test photos, cropped as the profile says."""
    out = []
    for name, img in load_samples("test")[: profile.test_images]:
        h, w = img.shape[:2]
        ch, cw = min(h, profile.hr_crop), min(w, profile.hr_crop)
        top, left = (h - ch) // 2, (w - cw) // 2
        hr = img[top : top + ch - ch % scale, left : left + cw - cw % scale]
        preset = get_preset(degradation)
        seed = derive_seed(0, f"{degradation}:{name}")
        x = degrade(hr, preset, scale=scale if preset.resizes else 1, seed=seed)
        out.append((np.ascontiguousarray(hr), x))
    return out


@pytest.fixture(scope="session")
def tiny_test_photos(
    tiny_profile: Profile,
) -> Callable[[str, int], list[tuple[np.ndarray, np.ndarray]]]:
    """`(degradation, scale) -> [(HR, input)]`: the test images of a `tiny_profile` run, made by
    hand."""
    return functools.partial(_degraded_test_photos, tiny_profile)


def _write_photo_pairs(root: Path) -> list[str]:
    """Write train (2 pairs) and val (1 pair) folders under `root`; return the `--set`
    overrides that point a config's data.train / data.val at them."""
    photos = {
        "train": [
            ("astronaut", skimage.data.astronaut()[40:104, 200:264]),
            ("coffee", skimage.data.coffee()[100:164, 150:214]),
        ],
        "val": [("chelsea", skimage.data.chelsea()[100:164, 150:214])],
    }
    for split, items in photos.items():
        for name, hr in items:
            for kind, img in (("hr", hr), ("lr", imresize(hr, 0.5))):
                (root / f"{split}_{kind}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / f"{split}_{kind}" / f"{name}.png")
    return [
        f"data.{s}={{kind: folders, input_dir: {root}/{s}_lr, target_dir: {root}/{s}_hr, scale: 2}}"
        for s in ("train", "val")
    ]


@pytest.fixture(scope="session")
def photo_pairs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Small ×2 folders of real photo crops for training (HR 64×64 crops, LR their MATLAB-bicubic
    ↓2; quick to open in every subprocess, unlike the embedded samples): the `--set` overrides
    that point data.train and data.val at them."""
    return _write_photo_pairs(tmp_path_factory.mktemp("pairs"))


def _tiny_edsr(scale: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec(arch="edsr", scale=scale, n_feats=8, n_resblocks=1)).eval()


@pytest.fixture(scope="session")
def tiny_edsr() -> Callable[..., torch.nn.Module]:
    """`(scale=2, seed=0) -> EDSR`: 8 channels, 1 block, seeded weights, in eval mode."""
    return _tiny_edsr


@pytest.fixture
def edsr_file(tmp_path: Path) -> Path:
    """A tiny EDSR ×2 (seed 0) saved as a native checkpoint, tmp_path/m.safetensors."""
    path = tmp_path / "m.safetensors"
    save_model(path, _tiny_edsr())
    return path


def _photo_file(folder: Path, name: str = "good.png", size: tuple[int, int] = (24, 20)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    path = folder / name
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def photo_file() -> Callable[..., Path]:
    """`(folder, name="good.png", size=(24, 20)) -> path`: an 8-bit RGB PNG of noise (H, W)."""
    return _photo_file


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """`(*args) -> (exit code, stderr)` of `twostage ARGS` run in-process."""

    def run(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().err

    return run


@pytest.fixture
def dead_pid() -> int:
    """The id of a process that has exited (as a killed writer's temporaries carry)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    # skimage filters the whole image (reflect padding) and then crops (win_size - 1) // 2 = 5
    # pixels before averaging, so only windows lying fully inside the image count: the same
    # 'valid' region BasicSR takes with cv2.filter2D(...)[5:-5, 5:-5]. Truncate 3.5·σ rounds to
    # radius 5, i.e. the 11-tap window.
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1 if a.ndim == 3 else None,
    )


@pytest.fixture(scope="session")
def skimage_ssim() -> Callable[[np.ndarray, np.ndarray], float]:
    """`(a, b) -> SSIM` of two uint8 images by scikit-image, set up as the paper's (BasicSR's)."""
    return _skimage_ssim


def _strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="session")
def strict_json() -> Callable[[str], object]:
    """`(text) -> value`: json.loads that refuses NaN and Infinity (which Python writes)."""
    return _strict_json
