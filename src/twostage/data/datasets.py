"""Datasets of aligned (input, target) image pairs, held in memory, and the training sampler.

Every dataset is a `PairSet`: named pairs whose target is exactly `scale`× the input, decoded
once and kept in memory as uint8 (8-bit sources) or float32 (16-bit sources and the float blur
presets), so that the loader costs a few crops per step and never decodes during training.

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
- synthetic: HR images and a degradation preset, input = `degrade(hr)` with a per-image seed
  `derive_seed(seed, name)`; target = HR or `intermediate(target_domain, hr)`; optionally
  cached to disk (PNG, 16-bit for float data) and reused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import overload

import numpy as np
import torch

from twostage.data.samples import load_samples
from twostage.errors import UserError
from twostage.limits import MAX_SCALE
from twostage.ops.degrade import (
    DOMAINS,
    Domain,
    Preset,
    degrade,
    derive_seed,
    get_preset,
    intermediate,
    mod_crop,
    preset_to_dict,
)
from twostage.ops.imageio import IMAGE_SUFFIXES, read_image, to_uint8, write_image
from twostage.ops.realistic import Realistic, degrade_batch

__all__ = [
    "DatasetSpec",
    "Pair",
    "PairSet",
    "div2k",
    "fresh_batch",
    "open_dataset",
    "paired_folders",
    "random_batch",
    "realsr",
    "retarget",
    "strip_suffixes",
    "synthetic",
]

KINDS = ("samples", "folders", "div2k", "realsr", "synthetic", "split")

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


@dataclass(frozen=True, eq=False)
class Pair:
    """One aligned example: H×W×3 input and (s·H)×(s·W)×3 target, uint8 or float32."""

    name: str
    input: np.ndarray
    target: np.ndarray


def _as_stored(img: np.ndarray, what: str) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"{what}: expected an H×W×3 RGB image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    return np.ascontiguousarray(img, dtype=np.float32)


class PairSet(Sequence[Pair]):
    """Named pairs with target = scale × input, validated on construction."""

    def __init__(self, pairs: Iterable[Pair], *, scale: int, name: str) -> None:
        self.scale = scale
        self.name = name
        self._pairs: list[Pair] = []
        seen: set[str] = set()
        for p in pairs:
            where = f"dataset {name}, pair {p.name}"
            inp = _as_stored(p.input, f"{where} input")
            tgt = _as_stored(p.target, f"{where} target")
            h, w = inp.shape[:2]
            if tgt.shape[:2] != (h * scale, w * scale):
                raise UserError(
                    f"{where}: target is {tgt.shape[0]}×{tgt.shape[1]} but input is "
                    f"{h}×{w}; scale {scale} needs {h * scale}×{w * scale}"
                )
            if p.name in seen:
                raise UserError(f"dataset {name}: two pairs are named {p.name}")
            seen.add(p.name)
            self._pairs.append(Pair(p.name, inp, tgt))
        if not self._pairs:
            raise UserError(f"dataset {name} has no images")

    def __len__(self) -> int:
        return len(self._pairs)

    @overload
    def __getitem__(self, index: int) -> Pair: ...

    @overload
    def __getitem__(self, index: slice) -> list[Pair]: ...

    def __getitem__(self, index: int | slice) -> Pair | list[Pair]:
        return self._pairs[index]

    def __iter__(self) -> Iterator[Pair]:
        return iter(self._pairs)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._pairs]

    def __repr__(self) -> str:
        return f"PairSet({self.name!r}, {len(self)} pairs, scale={self.scale})"


# --------------------------------------------------------------------------------------------
# Reading


def _read(path: Path) -> np.ndarray:
    """Decode an image for the in-memory cache: uint8 when 8-bit, float32 otherwise."""
    img, info = read_image(path)
    return to_uint8(img) if info.bit_depth == 8 else img


def _images_in(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"{what} folder not found: {folder}")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _names(paths: Sequence[Path], limit: int = 5) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _load_pair(
    name: str, lr_path: Path, hr_path: Path, scale: int, same_size_hint: str = ""
) -> Pair:
    """Read a pair; crop an HR up to s-1 pixels too large; a wrong size names both files."""
    lr, hr = _read(lr_path), _read(hr_path)
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


def _limited(items: list, limit: int | None) -> list:
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
    inputs, targets = _images_in(input_dir, "input"), _images_in(target_dir, "target")
    if not inputs:
        raise UserError(f"no images in {input_dir}")
    matched = _limited(_match(inputs, targets, input_dir=input_dir, target_dir=target_dir), limit)
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
    hr_files = _images_in(hr_dir, "DIV2K HR")
    lr_files = _images_in(lr_dir, "DIV2K LR")
    first, last = DIV2K_SPLITS[split]
    for p in hr_files:
        if not (p.stem.isdigit() and first <= int(p.stem) <= last):
            raise UserError(f"{p}: not a DIV2K {split} image name ({first:04d}–{last:04d}.png)")
    for p in lr_files:
        if not re.fullmatch(rf"\d{{4}}x{scale}", p.stem):
            raise UserError(f"{p}: not a DIV2K ×{scale} LR name (NNNNx{scale}.png)")
    if not hr_files:
        raise UserError(f"no images in {hr_dir}")
    matched = _limited(_match(lr_files, hr_files, input_dir=lr_dir, target_dir=hr_dir), limit)
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
        files = _images_in(d, f"RealSR {cam} {folder} ×{scale}")
        hr = [p for p in files if p.stem.endswith("_HR")]
        lr = [p for p in files if p.stem.endswith(f"_LR{scale}")]
        if not hr:
            raise UserError(f"no RealSR HR images (*_HR.png) in {d}")
        per_camera.append(_match(lr, hr, input_dir=d, target_dir=d))
    # alternate cameras so that a limit takes from both
    matched = [m for group in zip_longest(*per_camera) for m in group if m is not None]
    pairs = [
        _load_pair(k, lr, hr, scale, same_size_hint=_REALSR_V12)
        for k, lr, hr in _limited(matched, limit)
    ]
    return PairSet(pairs, scale=scale, name=f"realsr-{camera.lower()}-{split.lower()}-x{scale}")


_REALSR_V12 = (
    "that is the RealSR V1/V2 layout (LR upsampled to the HR size): use RealSR V3, "
    "or paired folders with scale 1"
)


# --------------------------------------------------------------------------------------------
# Synthetic pairs


def _domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise UserError(f"unknown target domain {name!r}; choose one of {', '.join(DOMAINS)}")
    return DOMAINS[name]


def _pair_scale(preset: Preset, scale: int, target_domain: str | None) -> int:
    if target_domain is None:
        return scale
    factor = _domain(target_domain).factor
    if scale % factor:
        raise UserError(
            f"target domain {target_domain} (↓{factor}) does not fit preset "
            f"{preset.name} at scale {scale}"
        )
    return scale // factor


def _stored(img: np.ndarray, float_data: bool) -> np.ndarray:
    return np.ascontiguousarray(img, dtype=np.float32) if float_data else to_uint8(img)


def synthetic(
    hr_images: Sequence[tuple[str, np.ndarray]] | Path | str,
    *,
    preset: str | Preset,
    scale: int | None = None,
    seed: int = 0,
    target_domain: str | None = None,
    cache_dir: Path | None = None,
    limit: int | None = None,
    name: str | None = None,
) -> PairSet:
    """Pairs made from HR images (a folder, or (name, H×W×3 array) pairs) with a preset.

    HR is mod-cropped to a multiple of s. Input: `degrade(hr, preset, seed=derive_seed(seed,
    name))`. Target: HR, or `intermediate(target_domain, hr, seed=derive_seed(seed, name +
    "/target"))` (independent noise for the blur9 target). With `cache_dir`, each pair is
    written once under a folder named by a hash of (preset, scale, seed, domain) and read back
    afterwards; file names carry a hash of the HR pixels, so a changed image is recomputed.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    s = p.scale if scale is None else scale
    pair_scale = _pair_scale(p, s, target_domain)
    if isinstance(hr_images, str | Path):
        folder = Path(hr_images)
        files = _limited(_images_in(folder, "HR"), limit)
        if not files:
            raise UserError(f"no images in {folder}")
        items: list[tuple[str, np.ndarray]] = [(f.stem, _read(f)) for f in files]
        set_name = name or f"{folder.name}-{p.name}"
    else:
        items = _limited(list(hr_images), limit)
        set_name = name or f"synthetic-{p.name}"
    cache = None
    if cache_dir is not None:
        key = json.dumps(
            {"preset": preset_to_dict(p), "scale": s, "seed": seed, "target_domain": target_domain},
            sort_keys=True,
        )
        cache = Path(cache_dir) / hashlib.sha256(key.encode()).hexdigest()[:16]
    pairs = []
    for img_name, hr in items:
        hr = mod_crop(hr, s)
        hr_hash = hashlib.sha256(np.ascontiguousarray(hr).tobytes()).hexdigest()[:10]
        paths = None
        if cache is not None:
            paths = (
                cache / "input" / f"{img_name}-{hr_hash}.png",
                cache / "target" / f"{img_name}-{hr_hash}.png",
            )
            if paths[0].is_file() and paths[1].is_file():
                pairs.append(Pair(img_name, _read(paths[0]), _read(paths[1])))
                continue
        lr = _stored(degrade(hr, p, scale=s, seed=derive_seed(seed, img_name)), p.float_output)
        if target_domain is None:
            target = hr if hr.dtype == np.uint8 else np.asarray(hr, dtype=np.float32)
        else:
            t = intermediate(target_domain, hr, seed=derive_seed(seed, img_name + "/target"))
            target = _stored(t, _domain(target_domain).bit_depth == 16)
        if paths is not None:
            write_image(paths[0], lr, bit_depth=8 if lr.dtype == np.uint8 else 16)
            write_image(paths[1], target, bit_depth=8 if target.dtype == np.uint8 else 16)
        pairs.append(Pair(img_name, lr, target))
    return PairSet(pairs, scale=pair_scale, name=set_name)


def retarget(pairs: PairSet, target_domain: str, *, seed: int = 0) -> PairSet:
    """Replace each HR target by `intermediate(target_domain, hr)`: stage 1's training pairs.

    E.g. DIV2K unknown ×4 (input, HR) → (input, MATLAB-bicubic ↓4 of HR) for the ×1 mapping.
    """
    factor = _domain(target_domain).factor
    if pairs.scale % factor:
        raise UserError(
            f"target domain {target_domain} (↓{factor}) does not fit dataset "
            f"{pairs.name} at scale {pairs.scale}"
        )
    out = []
    for p in pairs:
        t = intermediate(target_domain, p.target, seed=derive_seed(seed, p.name + "/target"))
        out.append(Pair(p.name, p.input, _stored(t, _domain(target_domain).bit_depth == 16)))
    return PairSet(out, scale=pairs.scale // factor, name=f"{pairs.name}-to-{target_domain}")


# --------------------------------------------------------------------------------------------
# Specs


@dataclass
class DatasetSpec:
    """Which pairs to load. Fields a kind does not use are ignored.

    kind: samples (embedded photos + preset), folders (input_dir/target_dir), div2k (root,
    split train|valid, track bicubic|unknown), realsr (root, camera Canon|Nikon|both, split
    train|test), synthetic (root = a folder of HR images + preset), split (the embedded photos
    as a recipe's runner sees them: `split_pairs`). scale: the SR factor of the
    data (the preset's, DIV2K's X<s>, RealSR's folder). target_domain: replace the HR target
    by an intermediate domain (bicubic-x4, bicubic-x2, blur9). limit: load the first N only.
    """

    kind: str = "samples"
    root: Path | None = None
    input_dir: Path | None = None
    target_dir: Path | None = None
    split: str = "train"
    track: str = "unknown"
    camera: str = "both"
    preset: str = "gaussian-aniso"
    scale: int = 4
    seed: int = 0
    target_domain: str | None = None
    cache_dir: Path | None = None
    limit: int | None = None
    crop: int | None = None  # kind split: centre-crop each HR image to at most this side
    input_domain: str | None = None  # kind split: inputs made by this intermediate domain
    # kind split, a per-patch family preset (realistic): degrade every training patch afresh
    # (the pairs hold (target, HR); `fresh_batch` makes the input), instead of one per image
    per_patch: bool = False
    instances: int = 1  # kind split: K fixed degraded instances per image, named NAME~k

    def __post_init__(self) -> None:
        if not (isinstance(self.scale, int) and 1 <= self.scale <= MAX_SCALE):
            raise UserError(f"scale must be an integer from 1 to {MAX_SCALE}, got {self.scale!r}")


def _need(value: Path | None, field: str, kind: str) -> Path:
    if value is None:
        raise UserError(f"dataset kind {kind} needs {field}")
    return Path(value)


def open_dataset(spec: DatasetSpec) -> PairSet:
    """Load the pairs a spec describes (see DatasetSpec)."""
    kind = spec.kind
    if kind == "split":
        return split_pairs(spec)
    if kind in ("samples", "synthetic"):
        embedded = kind == "samples"
        return synthetic(
            load_samples(spec.split) if embedded else _need(spec.root, "root", kind),
            preset=spec.preset,
            scale=spec.scale,
            seed=spec.seed,
            target_domain=spec.target_domain,
            cache_dir=spec.cache_dir,
            limit=spec.limit,
            name=f"samples-{spec.split}-{Path(spec.preset).stem}" if embedded else None,
        )
    if kind == "folders":
        pairs = paired_folders(
            _need(spec.input_dir, "input_dir", kind),
            _need(spec.target_dir, "target_dir", kind),
            scale=spec.scale,
            limit=spec.limit,
        )
    elif kind == "div2k":
        pairs = div2k(
            _need(spec.root, "root", kind),
            split=spec.split,
            track=spec.track,
            scale=spec.scale,
            limit=spec.limit,
        )
    elif kind == "realsr":
        pairs = realsr(
            _need(spec.root, "root", kind),
            camera=spec.camera,
            split=spec.split,
            scale=spec.scale,
            limit=spec.limit,
        )
    else:
        raise UserError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    if spec.target_domain is not None:
        pairs = retarget(pairs, spec.target_domain, seed=spec.seed)
    return pairs


# --------------------------------------------------------------------------------------------
# A recipe's split: the images the runner makes (data/splits.py uses the same functions)


def centre_crop(img: np.ndarray, *, crop: int | None, mod: int) -> np.ndarray:
    """Centre-crop to at most `crop` (if given), then mod-crop to a multiple of `mod`."""
    h, w = img.shape[:2]
    if crop is not None:
        ch, cw = min(h, crop), min(w, crop)
        top, left = (h - ch) // 2, (w - cw) // 2
        img = img[top : top + ch, left : left + cw]
        h, w = ch, cw
    return np.ascontiguousarray(img[: h - h % mod, : w - w % mod])


def degraded_image(hr: np.ndarray, degradation: str, *, name: str, scale: int, seed: int):
    """A recipe's input: the degradation's preset on HR, seeded by degradation and image."""
    preset = get_preset(degradation)
    return degrade(
        hr,
        preset,
        scale=scale if preset.resizes else 1,
        seed=derive_seed(seed, f"{degradation}:{name}"),
    )


def domain_image(hr: np.ndarray, domain: str, *, name: str, seed: int) -> np.ndarray:
    """A recipe's intermediate-domain image of HR, seeded by domain and image."""
    return intermediate(domain, hr, seed=derive_seed(seed, f"{domain}:{name}"))


def split_pairs(spec: DatasetSpec) -> PairSet:
    """Kind split: the first `limit` embedded photos of `split`, centre-cropped to `crop` and
    mod-cropped to `scale` (the recipe's); input: a stage-1 output folder (`input_dir`, PNGs
    named by image), an intermediate domain (`input_domain`) or the preset (`preset`); target:
    the HR image or `target_domain`. The runner trains on exactly these pairs."""
    items = instances(load_samples(spec.split)[: spec.limit], spec.instances)
    pairs = []
    for name, img in items:
        hr = centre_crop(img, crop=spec.crop, mod=spec.scale)
        if spec.per_patch:
            target = None
            if spec.target_domain is not None:
                target = domain_image(hr, spec.target_domain, name=name, seed=spec.seed)
            pairs.append(per_patch_pair(name, hr.astype(np.float32) / 255.0, target))
            continue
        if spec.input_dir is not None:
            x = read_image(Path(spec.input_dir) / f"{name}.png")[0]
        elif spec.input_domain is not None:
            x = domain_image(hr, spec.input_domain, name=name, seed=spec.seed)
        else:
            x = degraded_image(hr, spec.preset, name=name, scale=spec.scale, seed=spec.seed)
        if spec.target_domain is None:
            y = hr.astype(np.float32) / 255.0
        else:
            y = domain_image(hr, spec.target_domain, name=name, seed=spec.seed)
        pairs.append(Pair(name, x, y))
    if not pairs:
        raise UserError(f"dataset kind split: no images in the {spec.split} split")
    scale = pairs[0].target.shape[0] // pairs[0].input.shape[0]
    return PairSet(pairs, scale=scale, name=f"samples-{spec.split}")


def instances(items: list[tuple[str, np.ndarray]], k: int) -> list[tuple[str, np.ndarray]]:
    """Each (name, image) k times as NAME~0 … NAME~(k-1) (k fixed draws of a family per image:
    the specialized stage 2's training inputs); k = 1 leaves the list as it is."""
    if k < 1:
        raise UserError(f"instances must be >= 1, got {k}")
    return items if k == 1 else [(f"{n}~{i}", img) for n, img in items for i in range(k)]


def per_patch_pair(name: str, hr: np.ndarray, target: np.ndarray | None) -> Pair:
    """A per-patch training pair, flipped: input = the stage's target (None: the HR itself),
    target = the HR image that `fresh_batch` degrades afresh for every patch."""
    return Pair(name, hr if target is None else target, hr)


def per_patch_family(preset: str) -> Realistic:
    """The family of a per-patch preset (`data.train.per_patch`); other presets → UserError."""
    family = get_preset(preset).family
    if family is None:
        raise UserError(
            f"data.train.per_patch: preset {preset} is not a per-patch family (e.g. realistic)"
        )
    return family


def fresh_batch(
    pairs: PairSet,
    *,
    preset: str,
    scale: int,
    batch_size: int,
    patch_size: int,
    rng: np.random.Generator,
    seed: int,
    iteration: int,
    first_index: int,
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of a per-patch family: aligned (target, HR) crops as `random_batch` draws them
    from per_patch_pair's, then input = `degrade_batch(HR crop)` at ×`scale`, drawn from
    (derive_seed(seed, "per-patch"), iteration, first_index + i): a stream apart from `rng`'s."""
    family = per_patch_family(preset)
    target_patch = patch_size * scale // pairs.scale
    y, hr = random_batch(
        pairs, batch_size=batch_size, patch_size=target_patch, rng=rng, augment=augment
    )
    x = degrade_batch(
        hr,
        scale=scale,
        seed=derive_seed(seed, "per-patch"),
        iteration=iteration,
        first_index=first_index,
        family=family,
    )
    return x.float().contiguous(), y


# --------------------------------------------------------------------------------------------
# Training batches


def random_batch(
    pairs: Sequence[Pair] | PairSet,
    *,
    batch_size: int,
    patch_size: int,
    rng: np.random.Generator,
    augment: bool = True,
    scale: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """B random aligned patches: input B×3×p×p and target B×3×(p·s)×(p·s), float32 [0, 1].

    Each sample picks an image uniformly, a uniform input patch position, and (with augment)
    a horizontal flip, vertical flip and transpose (90° rotation) with probability 1/2 each,
    applied identically to input and target (BasicSR's `augment`). Crops stay uint8 until one
    conversion of the whole batch. An input smaller than the patch raises UserError naming it.
    """
    if not len(pairs):
        raise UserError("cannot draw a batch from an empty dataset")
    s = pairs.scale if scale is None and isinstance(pairs, PairSet) else scale
    if s is None:
        first = pairs[0]
        s = first.target.shape[0] // first.input.shape[0]
    p, q = patch_size, patch_size * s
    index = rng.integers(0, len(pairs), size=batch_size)
    crops_in, crops_tg = [], []
    for i in index:
        pair = pairs[int(i)]
        h, w = pair.input.shape[:2]
        if h < p or w < p:
            raise UserError(
                f"image {pair.name} (input {h}×{w}) is smaller than the "
                f"{p}×{p} training patch; lower the patch size or drop the image"
            )
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        a = pair.input[y : y + p, x : x + p]
        b = pair.target[y * s : y * s + q, x * s : x * s + q]
        if augment:
            hflip, vflip, transpose = rng.random(3) < 0.5
            if hflip:
                a, b = a[:, ::-1], b[:, ::-1]
            if vflip:
                a, b = a[::-1], b[::-1]
            if transpose:
                a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
        crops_in.append(a)
        crops_tg.append(b)
    return _to_batch(crops_in), _to_batch(crops_tg)


def _to_batch(crops: list[np.ndarray]) -> torch.Tensor:
    """Stack H×W×3 crops (uint8 or float32) into one contiguous B×3×H×W float32 tensor."""
    if all(c.dtype == np.uint8 for c in crops):
        batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    else:
        batch = torch.from_numpy(
            np.stack(
                [
                    c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else c.astype(np.float32)
                    for c in crops
                ]
            )
        )
        batch = batch.permute(0, 3, 1, 2)
    return batch.contiguous()
