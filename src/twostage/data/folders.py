"""Pairs read from disk: paired folders, DIV2K and RealSR V3, matched by file stem.

Layouts (docs/design.md):

- DIV2K: `DIV2K_{train,valid}_HR/0001.png` with `DIV2K_{train,valid}_LR_{bicubic,unknown}/X4/
  0001x4.png`; train is 0001–0800, valid 0801–0900 (the paper's test set; `split="test"` is
  accepted as a synonym).
- RealSR V3: `{Canon,Nikon}/{Train,Test}/{2,3,4}/Canon_001_HR.png` with `Canon_001_LR4.png`.
  In V3 the LR is the real low-resolution capture (HR/s in size); V1 and V2 store LR images
  upsampled back to the HR size, which is a different task (scale 1): such a pair is refused
  with a message rather than silently downscaled, since a resize would change the very
  degradation the dataset is about. Where an HR side is a few pixels larger than s×LR (not a
  multiple of s), it is cropped bottom/right to s×LR (BasicSR's mod-crop).
- paired folders: two folders matched by file stem after `strip_suffixes` (`0001x4`, `_LR4`,
  `_HR`, `_SR`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path

import numpy as np

from twostage.data.pairs import Pair, PairSet
from twostage.errors import UserError
from twostage.ops.imageio import read_image, to_uint8
from twostage.ops.inputs import is_image_file

_SUFFIX = re.compile(r"(?:_?x\d+|_(?:LR|HR|SR|lr|hr|sr)\d*)$")


def strip_suffixes(stem: str) -> str:
    """A file stem without scale/role suffixes: `0001x4`→`0001`, `Canon_001_LR4`→`Canon_001`.

    Strips `x<N>` (DIV2K `0001x4`, EDSR's benchmark `babyx4`), `_x<N>`, `_LR<N>`, `_HR`, `_SR`
    (upper or lower case), repeatedly (`0001x4_SR`→`0001`), never down to an empty name. Both
    sides of a pairing are stripped alike, so an over-eager strip still pairs correctly.
    """
    while True:
        shorter = _SUFFIX.sub("", stem)
        if shorter == stem or not shorter:
            return stem
        stem = shorter


# --------------------------------------------------------------------------------------------
# Reading


def read_stored(path: Path) -> np.ndarray:
    """Decode an image for the in-memory cache: uint8 when 8-bit, float32 otherwise."""
    img, info = read_image(path)
    return to_uint8(img) if info.bit_depth == 8 else img


def images_in(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"{what} folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _names(paths: Sequence[Path], limit: int = 5) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _load_pair(
    name: str, lr_path: Path, hr_path: Path, scale: int, same_size_hint: str = ""
) -> Pair:
    """Read a pair; crop an HR up to s-1 pixels too large; a wrong size names both files."""
    lr, hr = read_stored(lr_path), read_stored(hr_path)
    (h, w), (big_h, big_w) = lr.shape[:2], hr.shape[:2]
    if scale > 1 and (h, w) == (big_h, big_w) and same_size_hint:
        raise UserError(
            f"pair {name}: {lr_path} and {hr_path} have the same size; {same_size_hint}"
        )
    if not (h * scale <= big_h < (h + 1) * scale and w * scale <= big_w < (w + 1) * scale):
        raise UserError(
            f"pair {name}: {hr_path} is {big_h}×{big_w} but {lr_path} is {h}×{w}; "
            f"scale {scale} needs {h * scale}×{w * scale}"
        )
    return Pair(name, lr, hr[: h * scale, : w * scale])


def limited(items: list, limit: int | None) -> list:
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of images, got {limit}")
    return items if limit is None else items[:limit]


def index_by_stem(paths: list[Path]) -> dict[str, Path]:
    """Files keyed by `strip_suffixes(stem)`; two files with one key are an error naming both."""
    out: dict[str, Path] = {}
    for p in paths:
        key = strip_suffixes(p.stem)
        if key in out:
            raise UserError(f"{out[key]} and {p} both pair as {key!r}")
        out[key] = p
    return out


def _match(
    inputs: list[Path], targets: list[Path], *, input_dir: Path, target_dir: Path
) -> list[tuple[str, Path, Path]]:
    """Pair files by stripped stem; duplicates and missing partners raise, naming files."""
    ins, tgts = index_by_stem(inputs), index_by_stem(targets)
    no_target = [p for k, p in ins.items() if k not in tgts]
    no_input = [p for k, p in tgts.items() if k not in ins]
    if no_target:
        raise UserError(f"no target in {target_dir} for {_names(no_target)}")
    if no_input:
        raise UserError(f"no input in {input_dir} for {_names(no_input)}")
    return [(k, ins[k], tgts[k]) for k in sorted(ins)]


# --------------------------------------------------------------------------------------------
# Datasets on disk


def paired_folders(
    input_dir: Path,
    target_dir: Path,
    *,
    scale: int,
    limit: int | None = None,
    name: str | None = None,
) -> PairSet:
    """Two folders of images paired by stem (suffixes such as `x4`, `_LR4`, `_HR` stripped)."""
    input_dir, target_dir = Path(input_dir), Path(target_dir)
    inputs, targets = images_in(input_dir, "input"), images_in(target_dir, "target")
    if not inputs:
        raise UserError(f"no images in {input_dir}")
    matched = limited(_match(inputs, targets, input_dir=input_dir, target_dir=target_dir), limit)
    pairs = [_load_pair(k, i, t, scale) for k, i, t in matched]
    return PairSet(pairs, scale=scale, name=name or input_dir.name)


DIV2K_SPLITS = {"train": (1, 800), "valid": (801, 900)}
DIV2K_TRACKS = ("bicubic", "unknown")


def div2k(root: Path, *, split: str, track: str, scale: int, limit: int | None = None) -> PairSet:
    """DIV2K: the HR folder of a split with the LR of a track (`bicubic` or `unknown`) at ×s."""
    split = "valid" if split == "test" else split
    if split not in DIV2K_SPLITS:
        raise UserError(f"unknown DIV2K split {split!r}; choose train or valid")
    if track not in DIV2K_TRACKS:
        raise UserError(f"unknown DIV2K track {track!r}; choose one of {', '.join(DIV2K_TRACKS)}")
    root = Path(root)
    hr_dir = root / f"DIV2K_{split}_HR"
    lr_dir = root / f"DIV2K_{split}_LR_{track}" / f"X{scale}"
    hr_files = images_in(hr_dir, "DIV2K HR")
    lr_files = images_in(lr_dir, "DIV2K LR")
    first, last = DIV2K_SPLITS[split]
    for p in hr_files:
        if not (p.stem.isdigit() and first <= int(p.stem) <= last):
            raise UserError(f"{p}: not a DIV2K {split} image name ({first:04d}–{last:04d}.png)")
    for p in lr_files:
        if not re.fullmatch(rf"\d{{4}}x{scale}", p.stem):
            raise UserError(f"{p}: not a DIV2K ×{scale} LR name (NNNNx{scale}.png)")
    if not hr_files:
        raise UserError(f"no images in {hr_dir}")
    matched = limited(_match(lr_files, hr_files, input_dir=lr_dir, target_dir=hr_dir), limit)
    pairs = [_load_pair(k, lr, hr, scale) for k, lr, hr in matched]
    return PairSet(pairs, scale=scale, name=f"div2k-{split}-{track}-x{scale}")


REALSR_CAMERAS = ("Canon", "Nikon")


def realsr(root: Path, *, camera: str, split: str, scale: int, limit: int | None = None) -> PairSet:
    """RealSR V3: camera `Canon`, `Nikon` or `both`; split train/test; scale 2, 3 or 4."""
    cams = {"both": REALSR_CAMERAS, "canon": ("Canon",), "nikon": ("Nikon",)}.get(camera.lower())
    if cams is None:
        raise UserError(f"unknown RealSR camera {camera!r}; choose Canon, Nikon or both")
    folder = {"train": "Train", "test": "Test"}.get(split.lower())
    if folder is None:
        raise UserError(f"unknown RealSR split {split!r}; choose train or test")
    if scale not in (2, 3, 4):
        raise UserError(f"RealSR has scales 2, 3 and 4, not {scale}")
    per_camera = []
    for cam in cams:
        d = Path(root) / cam / folder / str(scale)
        files = images_in(d, f"RealSR {cam} {folder} ×{scale}")
        hr = [p for p in files if p.stem.endswith("_HR")]
        lr = [p for p in files if p.stem.endswith(f"_LR{scale}")]
        if not hr:
            raise UserError(f"no RealSR HR images (*_HR.png) in {d}")
        per_camera.append(_match(lr, hr, input_dir=d, target_dir=d))
    # alternate cameras so that a limit takes from both
    matched = [m for group in zip_longest(*per_camera) for m in group if m is not None]
    pairs = [
        _load_pair(k, lr, hr, scale, same_size_hint=_REALSR_V12)
        for k, lr, hr in limited(matched, limit)
    ]
    return PairSet(pairs, scale=scale, name=f"realsr-{camera.lower()}-{split.lower()}-x{scale}")


_REALSR_V12 = (
    "that is the RealSR V1/V2 layout (LR upsampled to the HR size): use RealSR V3, "
    "or paired folders with scale 1"
)
