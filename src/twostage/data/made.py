"""HR images listed without decoding (`hr_images`), and the pairs an image kind makes of them.

The image kinds (specs.py: samples, photos, div2k, realsr) list their HR images as `Source`s:
a name and how to decode it. Nothing is decoded until a pair or an image is used, so that a run
over thousands of photos holds only the cache of `pairs.Lazy` in memory. `made_pairs` makes a
spec's pairs exactly as the runner makes its splits (split_images.py), so that a network's
config.yaml retrains it from the files.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from twostage.data.batches import per_patch_pair
from twostage.data.folders import (
    DIV2K_SPLITS,
    DIV2K_TRACKS,
    REALSR_CAMERAS,
    _load_pair,
    images_in,
    index_by_stem,
)
from twostage.data.pairs import Lazy, Pair, PairSet
from twostage.data.samples import load_samples
from twostage.data.specs import Div2kData, ImageData, PhotosData, RealsrData, SamplesData
from twostage.data.split_images import centre_crop, degraded_image, domain_image
from twostage.errors import UserError
from twostage.limits import MAX_PIXELS
from twostage.ops.imageio import ImageReadError, image_size, read_image, to_uint8
from twostage.ops.inputs import is_image_file

PHOTO_VALID_EVERY = 10  # photos: every 10th image (sorted by path) is a validation image


@dataclass(frozen=True)
class Source:
    """One HR image: its name, how to decode it (uint8 H×W×3), and its LR track file if any."""

    name: str
    load: Callable[[], np.ndarray]
    path: Path | None = None  # the HR file (None: an embedded image)
    lr: Path | None = None


def _file(path: Path, max_pixels: int) -> Callable[[], np.ndarray]:
    return lambda: to_uint8(read_image(path, max_pixels=max_pixels)[0])


def _photo_name(path: Path, root: Path) -> str:
    """A file's name in the set: its path under the root without suffix, `/` → `_`."""
    return path.relative_to(root).with_suffix("").as_posix().replace("/", "_")


def _readable(path: Path, max_pixels: int, skip: bool) -> bool:
    """Whether the header of `path` reads and is within `max_pixels`; a bad file stops the run
    (UserError naming it) unless `skip`, where it is named on stderr and left out."""
    try:
        width, height = image_size(path)
        if width * height > max_pixels:
            raise ImageReadError(
                path, f"{width}×{height} is over {max_pixels / 1e6:g} MP (--max-pixels)"
            )
    except ImageReadError as exc:
        if not skip:
            raise UserError(f"{exc} (set skip_unreadable to leave such files out)") from None
        print(f"twostage: skipped: {exc}", file=sys.stderr)
        return False
    return True


def _photos(spec: PhotosData) -> list[Source]:
    max_pixels = spec.max_pixels
    roots = spec.valid_roots if spec.split == "valid" and spec.valid_roots else spec.roots
    files: list[tuple[str, Path]] = []
    for root in roots:
        if not root.is_dir():
            raise UserError(f"photos folder not found: {root}")
        found = sorted(p for p in root.rglob("*") if is_image_file(p))
        files += [(_photo_name(p, root), p) for p in found]
    if spec.split not in ("train", "valid"):
        raise UserError(f"unknown photos split {spec.split!r}; choose train or valid")
    seen: dict[str, Path] = {}
    for name, path in files:
        if name in seen:
            raise UserError(f"{seen[name]} and {path} both name image {name!r}; rename one")
        seen[name] = path
    if not spec.valid_roots:
        if len(files) < 2:
            raise UserError(
                f"photos {', '.join(map(str, roots))}: {len(files)} image(s); a train/valid "
                "split needs at least 2 (or give valid_roots / --data photos-valid=DIR)"
            )
        step = PHOTO_VALID_EVERY
        valid = set(range(step - 1, len(files), step)) or {len(files) - 1}
        keep = valid if spec.split == "valid" else set(range(len(files))) - valid
        files = [f for i, f in enumerate(files) if i in keep]
    return [
        Source(name, _file(path, max_pixels), path)
        for name, path in files
        if _readable(path, max_pixels, spec.skip_unreadable)
    ]


def _div2k(spec: Div2kData, max_pixels: int) -> list[Source]:
    split = "valid" if spec.split == "test" else spec.split
    if split not in DIV2K_SPLITS:
        raise UserError(f"unknown DIV2K split {spec.split!r}; choose train or valid")
    hr_dir = spec.root / f"DIV2K_{split}_HR"
    hr = images_in(hr_dir, "DIV2K HR")
    if not hr:
        raise UserError(f"no images in {hr_dir}")
    if spec.track is None:
        return [Source(p.stem, _file(p, max_pixels), p) for p in hr]
    if spec.track not in DIV2K_TRACKS:
        raise UserError(f"unknown DIV2K track {spec.track!r}; choose {', '.join(DIV2K_TRACKS)}")
    lr_dir = spec.root / f"DIV2K_{split}_LR_{spec.track}" / f"X{spec.scale}"
    lr = index_by_stem(images_in(lr_dir, "DIV2K LR"))
    missing = [p for p in hr if p.stem not in lr]
    if missing:
        raise UserError(f"no LR image in {lr_dir} for {missing[0]}")
    return [Source(p.stem, _file(p, max_pixels), p, lr[p.stem]) for p in hr]


def _realsr(spec: RealsrData, max_pixels: int) -> list[Source]:
    cams = {"both": REALSR_CAMERAS, "canon": ("Canon",), "nikon": ("Nikon",)}
    folder = {"train": "Train", "test": "Test"}.get(spec.split.lower())
    if spec.camera.lower() not in cams or folder is None:
        raise UserError(
            f"RealSR: camera {spec.camera!r}, split {spec.split!r}; choose Canon, Nikon or "
            "both, and train or test"
        )
    if spec.track not in (None, "real"):
        raise UserError(f"unknown RealSR track {spec.track!r}; the only one is real")
    out = []
    for cam in cams[spec.camera.lower()]:
        d = spec.root / cam / folder / str(spec.scale)
        files = images_in(d, f"RealSR {cam} {folder} ×{spec.scale}")
        lr = index_by_stem([p for p in files if p.stem.endswith(f"_LR{spec.scale}")])
        for p in (p for p in files if p.stem.endswith("_HR")):
            name = p.stem[: -len("_HR")]
            if spec.track is not None and name not in lr:
                raise UserError(f"no RealSR LR{spec.scale} image in {d} for {p}")
            out.append(Source(name, _file(p, max_pixels), p, lr.get(name) if spec.track else None))
    if not out:
        raise UserError(f"no RealSR HR images (*_HR.png) under {spec.root}")
    return out


def hr_images(spec: ImageData, *, max_pixels: int = MAX_PIXELS) -> list[Source]:
    """The HR images of an image kind's split, in a fixed order, `limit` applied; nothing is
    decoded (photos' headers are read, to refuse or skip unreadable files up front)."""
    if isinstance(spec, SamplesData):
        items = [Source(n, lambda img=img: img) for n, img in load_samples(spec.split)]
    elif isinstance(spec, PhotosData):
        items = _photos(spec)
    elif isinstance(spec, Div2kData):
        items = _div2k(spec, max_pixels)
    else:
        items = _realsr(spec, max_pixels)
    return items[: spec.limit]


def instances(items: list[Source], k: int) -> list[Source]:
    """Each image k times as NAME~0 … NAME~(k-1) (k fixed draws of a family per image: the
    specialized stage 2's training inputs); k = 1 leaves the list as it is."""
    if k < 1:
        raise UserError(f"instances must be >= 1, got {k}")
    return items if k == 1 else [replace(s, name=f"{s.name}~{i}") for s in items for i in range(k)]


def hr_of(source: Source, *, crop: int | None, scale: int) -> np.ndarray:
    """The HR image as a split holds it: centre-cropped to `crop`, mod-cropped to `scale`."""
    return centre_crop(source.load(), crop=crop, mod=scale)


def _input(spec: ImageData, source: Source, hr: np.ndarray) -> np.ndarray:
    """A pair's input, made from (or read beside) its HR image."""
    name = source.name
    if spec.input_dir is not None:
        return read_image(Path(spec.input_dir) / f"{name}.png")[0]
    if spec.input_domain is not None:
        return domain_image(hr, spec.input_domain, name=name, seed=spec.seed)
    assert spec.preset is not None  # specs._Made: exactly one input
    return degraded_image(hr, spec.preset, name=name, scale=spec.scale, seed=spec.seed)


def _made_pair(spec: ImageData, source: Source) -> Pair:
    """One pair of `made_pairs` (see specs._Made for what input and target are)."""
    if source.lr is not None:  # the kind's LR track: read beside its HR file
        pair = _load_pair(source.name, source.lr, source.path or Path(), spec.scale)
        hr, x = pair.target, pair.input
    else:
        hr = hr_of(source, crop=spec.crop, scale=spec.scale)
        x = None
    target = None
    if spec.target_domain is not None:
        target = domain_image(hr, spec.target_domain, name=source.name, seed=spec.seed)
    if spec.per_patch:
        return per_patch_pair(source.name, hr, target)
    x = _input(spec, source, hr) if x is None else x
    return Pair(source.name, x, hr.astype(np.float32) / 255.0 if target is None else target)


def made_pairs(spec: ImageData, *, max_pixels: int = MAX_PIXELS) -> PairSet:
    """The pairs of an image kind, made on first use and cached within bounds (`Lazy`)."""
    if getattr(spec, "track", None) is not None and spec.crop is not None:
        raise UserError(f"dataset kind {spec.kind}: crop cannot be used with a track")
    items = instances(hr_images(spec, max_pixels=max_pixels), spec.instances)
    if not items:
        raise UserError(f"dataset kind {spec.kind}: no images in the {spec.split} split")
    first = _made_pair(spec, items[0])
    scale = first.target.shape[0] // first.input.shape[0]
    name = f"{spec.kind}-{spec.split}"
    return PairSet.lazy(
        [s.name for s in items], lambda i: _made_pair(spec, items[i]), scale=scale, name=name
    )


def lazy_hr(items: list[Source], *, crop: int | None, scale: int) -> Lazy[np.ndarray]:
    """The HR images of a split, decoded on use (the runner's `Split.hr`)."""
    return Lazy(len(items), lambda i: hr_of(items[i], crop=crop, scale=scale))
