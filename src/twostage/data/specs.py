"""Which pairs a config names: one frozen dataclass per dataset kind (`DatasetSpec`).

A YAML `data.train` / `data.val` names its `kind`; a field that kind does not have is an error
naming the field (parse.py picks the class by `kind`). Image kinds (samples, photos, div2k,
realsr) make pairs from HR images, lazily, as the runner does (data/made.py): the input is a
preset's degradation, a per-patch family, an intermediate domain, a folder of stage-1 outputs,
or the dataset's own LR track; the target is HR or an intermediate domain of it. The folders
and synthetic kinds read or make pairs eagerly (folders.py, synthetic.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from twostage.errors import UserError, short
from twostage.limits import MAX_PIXELS, MAX_SCALE


def _check_scale(scale: int) -> None:
    if not (isinstance(scale, int) and 1 <= scale <= MAX_SCALE):
        raise UserError(f"scale must be an integer from 1 to {MAX_SCALE}, got {short(scale)}")


@dataclass(frozen=True, kw_only=True)
class _Made:
    """Fields of the image kinds. Input: exactly one of `preset` (one draw per image, or every
    training patch afresh with `per_patch`), `input_domain`, `input_dir` (PNGs named by image:
    a stage 1's outputs) or the kind's `track`. Target: HR, or `target_domain` of it. `crop`:
    centre-crop each HR image to at most this side; then it is mod-cropped to `scale`.
    `instances`: K copies of each image, NAME~0…NAME~(K-1) (K fixed draws of a family).
    `limit`: the first N images only."""

    split: str = "train"
    scale: int = 4
    seed: int = 0
    preset: str | None = None
    per_patch: bool = False
    input_domain: str | None = None
    input_dir: Path | None = None
    target_domain: str | None = None
    crop: int | None = None
    instances: int = 1
    limit: int | None = None

    def __post_init__(self) -> None:
        _check_scale(self.scale)
        given = [
            name
            for name, value in (
                ("preset", self.preset),
                ("input_domain", self.input_domain),
                ("input_dir", self.input_dir),
                ("track", getattr(self, "track", None)),
            )
            if value is not None
        ]
        if len(given) != 1:
            said = ", ".join(given) if given else "none"
            raise UserError(
                f"dataset kind {self.kind}: give exactly one input "  # type: ignore[attr-defined]
                f"(preset, input_domain, input_dir or track), got {said}"
            )
        if self.per_patch and self.preset is None:
            raise UserError("per_patch needs a preset (a per-patch family, e.g. realistic-mix)")
        if self.crop is not None and self.crop < 1:
            raise UserError(f"crop must be >= 1, got {self.crop}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit must be >= 1, got {self.limit}")


@dataclass(frozen=True, kw_only=True)
class SamplesData(_Made):
    """The embedded photos (`twostage data samples`): split train, test or detail."""

    kind: Literal["samples"] = "samples"


@dataclass(frozen=True, kw_only=True)
class PhotosData(_Made):
    """Every image under `roots` (recursively, sorted by path). split train: all but the
    validation images; valid: every 10th image (the 10th, 20th, …; the last one when there
    are fewer than 10), or every image under `valid_roots` when given (then train is all of
    `roots`). `skip_unreadable`: leave out (and name) files that cannot be read or are over
    `max_pixels`, instead of stopping."""

    roots: tuple[Path, ...] = ()
    valid_roots: tuple[Path, ...] = ()
    skip_unreadable: bool = False
    max_pixels: int = MAX_PIXELS  # larger images are unreadable (read from the header)
    kind: Literal["photos"] = "photos"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.roots and not (self.split == "valid" and self.valid_roots):
            raise UserError("dataset kind photos needs roots (folders of images)")


@dataclass(frozen=True, kw_only=True)
class Div2kData(_Made):
    """DIV2K: `DIV2K_{train,valid}_HR` under `root`; with `track` (bicubic or unknown), the
    inputs are that LR track's files at ×`scale` instead of a preset's."""

    root: Path
    track: str | None = None
    kind: Literal["div2k"] = "div2k"


@dataclass(frozen=True, kw_only=True)
class RealsrData(_Made):
    """RealSR V3 under `root`: camera Canon, Nikon or both, split train or test; with `track:
    real`, the inputs are the real LR captures instead of a preset's."""

    root: Path
    camera: str = "both"
    track: str | None = None
    kind: Literal["realsr"] = "realsr"


@dataclass(frozen=True, kw_only=True)
class FoldersData:
    """Paired folders matched by file stem: `input_dir` (LR) and `target_dir` (HR) at
    ×`scale`; `target_domain` replaces the HR target by an intermediate domain."""

    input_dir: Path
    target_dir: Path
    scale: int = 4
    seed: int = 0
    target_domain: str | None = None
    limit: int | None = None
    kind: Literal["folders"] = "folders"

    def __post_init__(self) -> None:
        _check_scale(self.scale)


@dataclass(frozen=True, kw_only=True)
class SyntheticData:
    """A folder of HR images (`root`) degraded by `preset`, one draw per image, optionally
    cached on disk (`cache_dir`)."""

    root: Path
    preset: str
    scale: int = 4
    seed: int = 0
    target_domain: str | None = None
    cache_dir: Path | None = None
    limit: int | None = None
    kind: Literal["synthetic"] = "synthetic"

    def __post_init__(self) -> None:
        _check_scale(self.scale)


ImageData = SamplesData | PhotosData | Div2kData | RealsrData
DatasetSpec = SamplesData | PhotosData | Div2kData | RealsrData | FoldersData | SyntheticData
SPEC_OF: dict[str, type] = {
    "samples": SamplesData,
    "photos": PhotosData,
    "div2k": Div2kData,
    "realsr": RealsrData,
    "folders": FoldersData,
    "synthetic": SyntheticData,
}
KINDS = tuple(SPEC_OF)


def per_patch(spec: DatasetSpec) -> bool:
    """Whether the spec's inputs are drawn afresh for every training patch."""
    return isinstance(spec, ImageData) and spec.per_patch
