"""The embedded offline data: photos from the scikit-image wheel, plus seeded dead leaves.

No network, ever: every photo below ships inside the scikit-image wheel (`skimage/data/`),
and `skimage.data.<name>()` reads it from disk (the functions whose files need a pooch download
are not used). The split is fixed:

- test (3 photos): astronaut, chelsea, coffee: classic, textured, photographic scenes.
- train (5 photos): rocket, motorcycle_left, hubble_deep_field, immunohistochemistry, retina;
  plus 8 procedural "dead leaves" images (384×384 and 512×512, so that ×4 LR holds a 96×96
  patch). `motorcycle_right` is left out: it is the other view of the same stereo scene.
  Other wheel images are synthetic (colorwheel, logo), need a download (pooch), or are
  duplicates (`cat` is `chelsea`).
- detail (5 gray photos, as RGB): page, text, camera, brick, coins: print, handwriting and
  man-made fine structure, which neither the photos nor the dead leaves have. Never trained
  on: a test split of the fine detail a restorer must keep. Centre crops of at most
  DETAIL_SIDE pixels, so that testing them costs little.

Dead leaves (Matheron; Lee, Mumford & Huang 2001) are random occluding disks with a power-law
radius density ∝ r⁻³, which gives the scale invariance and sharp edges of natural images;
Achddou et al. (2021) showed that restoration networks trained on them do reasonably well.
Images are rendered at 2× and box-averaged to 1× (anti-aliased edges).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from twostage.errors import UserError
from twostage.ops.files import check_output_file
from twostage.ops.imageio import to_uint8, write_image

__all__ = ["SAMPLES", "SampleInfo", "dead_leaves", "load_samples", "samples_table", "write_samples"]

SPLITS = ("train", "test", "detail")
DETAIL_SIDE = 256  # the detail images are centre crops of at most this side
# side of each dead-leaves image: at ×4 the LR is 96 or 128 pixels, enough for the paper's
# 96×96 training patches
DEAD_LEAVES_SIZES = (384, 512, 384, 512, 384, 512, 384, 512)
DEAD_LEAVES_SEED = 2024


@dataclass(frozen=True)
class SampleInfo:
    """One embedded image: its name, split, where it comes from, and its size."""

    name: str
    split: str
    source: str
    height: int
    width: int


_PHOTOS: tuple[tuple[str, str, str, int, int], ...] = (
    # name, split, skimage.data function, height, width
    ("astronaut", "test", "astronaut", 512, 512),
    ("chelsea", "test", "chelsea", 300, 451),
    ("coffee", "test", "coffee", 400, 600),
    ("rocket", "train", "rocket", 427, 640),
    ("motorcycle_left", "train", "stereo_motorcycle", 500, 741),
    ("hubble_deep_field", "train", "hubble_deep_field", 872, 1000),
    ("immunohistochemistry", "train", "immunohistochemistry", 512, 512),
    ("retina", "train", "retina", 1411, 1411),
)

_DETAIL: tuple[tuple[str, int, int], ...] = (
    # name (= skimage.data function), height, width of the centre crop
    ("page", 191, 256),
    ("text", 172, 256),
    ("camera", 256, 256),
    ("brick", 256, 256),
    ("coins", 256, 256),
)

SAMPLES: tuple[SampleInfo, ...] = (
    *(SampleInfo(name, split, f"skimage.data.{fn}()", h, w) for name, split, fn, h, w in _PHOTOS),
    *(
        SampleInfo(name, "detail", f"skimage.data.{name}(), gray as RGB, centre crop", h, w)
        for name, h, w in _DETAIL
    ),
    *(
        SampleInfo(
            f"deadleaves_{i:02d}", "train", f"dead leaves, seed {DEAD_LEAVES_SEED + i}", size, size
        )
        for i, size in enumerate(DEAD_LEAVES_SIZES)
    ),
)


def dead_leaves(
    size: int, *, seed: int, r_min: float = 2.0, r_max: float | None = None, supersample: int = 2
) -> np.ndarray:
    """A size×size uint8 RGB dead-leaves image, deterministic per seed.

    Disks are laid front to back (each one only paints pixels not yet covered), radii drawn
    from a density ∝ r⁻³ on [r_min, r_max] (output pixels), colours uniform in RGB, until all
    but 0.1 % of the pixels are covered; those take the colour of the nearest covered pixel
    (covering them too would take as many disks again). Rendered at `supersample`× and
    box-averaged for anti-aliased edges.
    """
    rng = np.random.default_rng(seed)
    n = size * supersample
    r_max = size / 3 if r_max is None else r_max
    lo, hi = r_min * supersample, r_max * supersample
    canvas = np.zeros((n, n, 3), dtype=np.float64)
    free = np.ones((n, n), dtype=bool)
    remaining = n * n
    stop = n * n // 1000  # the last 0.1 % would take half the disks: fill it from neighbours
    batch = 256
    while remaining > stop:
        u = rng.random(batch)
        radii = (lo**-2 - u * (lo**-2 - hi**-2)) ** -0.5  # inverse CDF of r^-3
        centres = rng.random((batch, 2)) * n
        colours = rng.random((batch, 3))
        for r, (cy, cx), colour in zip(radii, centres, colours):
            y0, y1 = max(int(cy - r), 0), min(math.ceil(cy + r) + 1, n)
            x0, x1 = max(int(cx - r), 0), min(math.ceil(cx + r) + 1, n)
            yy = np.arange(y0, y1)[:, None] + 0.5 - cy
            xx = np.arange(x0, x1)[None, :] + 0.5 - cx
            hit = (yy * yy + xx * xx <= r * r) & free[y0:y1, x0:x1]
            count = int(hit.sum())
            if count:
                canvas[y0:y1, x0:x1][hit] = colour
                free[y0:y1, x0:x1][hit] = False
                remaining -= count
                if remaining <= stop:
                    break
    if remaining:
        _, (iy, ix) = distance_transform_edt(free, return_indices=True)
        canvas = canvas[iy, ix]
    img = canvas.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return to_uint8(img)


def _photo_loader(fn: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        img = getattr(skimage.data, fn)()
        if fn == "stereo_motorcycle":
            img = img[0]  # (left, right, disparity)
        return np.ascontiguousarray(img[..., :3], dtype=np.uint8)

    return load


def _detail(name: str) -> np.ndarray:
    """A gray wheel image as RGB (three equal channels), centre-cropped to DETAIL_SIDE."""
    import skimage.data

    gray = getattr(skimage.data, name)()
    h, w = gray.shape[:2]
    ch, cw = min(h, DETAIL_SIDE), min(w, DETAIL_SIDE)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = gray[top : top + ch, left : left + cw]
    return np.ascontiguousarray(np.stack([crop] * 3, axis=-1), dtype=np.uint8)


@functools.cache
def _load(name: str) -> np.ndarray:
    info = next(s for s in SAMPLES if s.name == name)
    if name.startswith("deadleaves_"):
        seed = DEAD_LEAVES_SEED + int(name.rsplit("_", 1)[1])
        img = dead_leaves(info.height, seed=seed)
    elif info.split == "detail":
        img = _detail(name)
    else:
        fn = next(fn for n, _, fn, _, _ in _PHOTOS if n == name)
        img = _photo_loader(fn)()
    if img.shape != (info.height, info.width, 3):
        raise UserError(
            f"embedded image {name} has shape {img.shape}, expected "
            f"{info.height}×{info.width}×3 (unexpected scikit-image version?)"
        )
    img.setflags(write=False)  # shared by every caller: read-only
    return img


def load_samples(split: str) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 H×W×3 read-only array) for every image of a split, in table order."""
    if split not in SPLITS:
        raise UserError(f"unknown samples split {split!r}; choose one of {', '.join(SPLITS)}")
    return [(s.name, _load(s.name)) for s in SAMPLES if s.split == split]


def samples_table() -> str:
    """The embedded split as a plain-text table (printed by `twostage data samples --list`)."""
    rows = [("name", "split", "size (H×W)", "source")]
    rows += [(s.name, s.split, f"{s.height}×{s.width}", s.source) for s in SAMPLES]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
    photos = {
        sp: sum(1 for s in SAMPLES if s.split == sp and not s.name.startswith("dead"))
        for sp in SPLITS
    }
    lines.append(
        f"train: {photos['train']} photos + {len(DEAD_LEAVES_SIZES)} dead-leaves images; "
        f"test: {photos['test']} photos; detail: {photos['detail']} gray photos of print and "
        "man-made structure (a test split, never trained on)"
    )
    return "\n".join(lines)


def write_samples(out: Path, *, overwrite: bool = False) -> list[Path]:
    """Write every embedded image as 8-bit PNG to OUT/<split>/ (train, test, detail); returns
    the paths.

    Checked before anything is written: every file lands inside `out` (not through a linked
    folder), and an existing file is replaced only with `overwrite`."""
    out = Path(out)
    plan = [
        (out / split / f"{name}.png", img) for split in SPLITS for name, img in load_samples(split)
    ]
    for path, _ in plan:
        if not path.parent.resolve().is_relative_to(out.resolve()):
            raise UserError(f"--out {out}: {path} would be written outside it (a linked folder)")
        check_output_file(path, "--out", overwrite=overwrite)
    for path, img in plan:
        write_image(path, img.astype(np.float32) / 255.0, bit_depth=8)
    return [path for path, _ in plan]
