"""Which images train and test a recipe: the training split and the named test sets.

`plan_data` turns `--data NAME=PATH` entries (the embedded samples, folders of photos, DIV2K,
RealSR) into one training `Split` (HR images listed, decoded and degraded on use within a
bounded cache) and the `TestSet`s of the report, the in-distribution one first. How much of each
it uses (crops, image counts) comes from the run's profile (`ImageBudget`, which config.Profile
satisfies).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from twostage.data.folders import _load_pair
from twostage.data.made import Source, hr_images, instances, lazy_hr
from twostage.data.pairs import Lazy
from twostage.data.specs import SPEC_OF
from twostage.data.split_images import degraded_image, domain_image
from twostage.errors import UserError
from twostage.limits import MAX_PIXELS
from twostage.ops.imageio import to_float

EMBEDDED = "embedded"  # `--data samples=embedded`: the photos bundled with scikit-image
# The embedded fine-detail split (print, man-made structure): with a recipe's `detail_sets`,
# tested as `detail-<degradation>` after the other test sets, never trained on; its suite mean
# is reported apart from the photos'.
DETAIL = "detail"
DATA_NAMES = ("samples", "photos", "photos-valid", "div2k", "realsr")
# The degradations a data's own LR files stand for; other degradations are presets.
TRACKS = {"div2k": ("bicubic", "unknown"), "realsr": ("real",)}
FILE_TRACKS = ("unknown", "real")  # tracks no preset can make


class ImageBudget(Protocol):
    """How much of the data a run uses (config.Profile has these fields)."""

    hr_crop: int | None  # centre-crop every embedded image to at most this side
    train_crop: int | None  # training images only: this crop instead of hr_crop
    train_images: int | None  # use only the first N images of each split
    test_images: int | None


class Wanted(Protocol):
    """What a recipe asks of the data (recipes.Recipe has these fields)."""

    name: str
    scale: int
    degradations: tuple[str, ...]
    test_degradations: tuple[str, ...]
    detail_sets: bool


def short_name(degradation: str) -> str:
    """A label for a degradation: the preset name, or a YAML file's stem."""
    return Path(degradation).stem if degradation.endswith((".yaml", ".yml")) else degradation


@dataclass
class Split:
    """The HR images of one split, listed (`items`) and decoded on use (`hr`), with their
    inputs per degradation (made on use, a bounded cache each).

    `fields` are the image kind's fields that list these images (kind, roots, split, limit,
    crop, scale): the runner's networks name their data with them. `track` is the degradation
    the data's own LR files stand for (DIV2K's bicubic or unknown, RealSR's real); other
    degradations are synthesised from HR with a preset.
    """

    source: str
    fields: dict[str, Any]
    items: list[Source]
    track: str | None = None
    data_seed: int = 0
    _cache: dict[tuple[str, str], Lazy[np.ndarray]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.items]

    @functools.cached_property
    def hr(self) -> Lazy[np.ndarray]:
        """uint8 H×W×3, centre-cropped and mod-cropped to the recipe's scale."""
        return lazy_hr(self.items, crop=self.fields.get("crop"), scale=self.fields["scale"])

    def _lazy(self, key: tuple[str, str], make: Callable[[int], np.ndarray]) -> Lazy[np.ndarray]:
        if key not in self._cache:
            self._cache[key] = Lazy(len(self.items), make)
        return self._cache[key]

    def inputs(self, degradation: str, *, scale: int) -> Lazy[np.ndarray]:
        if degradation == self.track:
            return self._lazy(("track", degradation), self._track_input)
        return self._lazy(
            ("degraded", degradation),
            lambda i: degraded_image(
                self.hr[i], degradation, name=self.names[i], scale=scale, seed=self.data_seed
            ),
        )

    def _track_input(self, i: int) -> np.ndarray:
        s = self.items[i]
        return to_float(_load_pair(s.name, s.lr, s.path or Path(), self.fields["scale"]).input)

    def domain(self, domain: str) -> Lazy[np.ndarray]:
        return self._lazy(
            ("domain", domain),
            lambda i: domain_image(self.hr[i], domain, name=self.names[i], seed=self.data_seed),
        )

    def instances(self, k: int) -> Split:
        """The same images, each k times as NAME~0…NAME~(k-1): k fixed draws of a per-patch
        family per image (the specialized stage's training inputs, `instances` of a spec)."""
        return Split(self.source, self.fields, instances(self.items, k), None, self.data_seed)

    @functools.cached_property
    def description(self) -> dict:
        """What identifies these images, for the cache hash: names, and the bytes of their
        files (of the embedded images, their pixels). Read once per run: every network's key
        names it."""
        digest = hashlib.sha256()
        for s in self.items:
            digest.update(s.name.encode())
            if s.path is None:
                digest.update(np.ascontiguousarray(s.load()).tobytes())
            else:
                digest.update(hashlib.sha256(s.path.read_bytes()).digest())
        return {
            "source": self.source,
            "images": len(self.items),
            "seed": self.data_seed,
            "fields": {k: str(v) for k, v in sorted(self.fields.items())},
            "content": digest.hexdigest()[:16],
        }


@dataclass(frozen=True)
class TestSet:
    """One table of the report: a split seen through one degradation."""

    name: str  # "<data>-<degradation>"
    split: Split
    degradation: str  # what its inputs are (a preset or a given track)
    networks_of: str  # the training degradation whose networks serve it


def _split(source: str, kind: str, fields: dict[str, Any], *, scale: int, max_pixels: int) -> Split:
    """A Split of an image kind's images (made.hr_images lists them, nothing decoded)."""
    fields = {"kind": kind, **fields, "scale": scale}
    any_input = {} if fields.get("track") else {"preset": "bicubic"}  # only the listing is used
    probe = SPEC_OF[kind](**fields, **any_input)
    track = fields.get("track")
    return Split(source, fields, hr_images(probe, max_pixels=max_pixels), track)


def _budget(budget: ImageBudget, split: str, *, crops: bool) -> dict[str, Any]:
    """The profile's image count (and, for the embedded photos, crop) of a split."""
    train = split == "train"
    out: dict[str, Any] = {"limit": budget.train_images if train else budget.test_images}
    if crops:
        out["crop"] = budget.train_crop if train and budget.train_crop else budget.hr_crop
    return out


def _check_data(data: Sequence[tuple[str, Path]]) -> list[tuple[str, Path]]:
    data = list(data)
    for name, path in data:
        if name not in DATA_NAMES:
            raise UserError(
                f"--data {name}=...: unknown data name; choose from {', '.join(DATA_NAMES)}"
            )
        if name == "samples" and str(path) != EMBEDDED:
            raise UserError(
                f"--data samples={path}: only samples={EMBEDDED} exists "
                "(use photos=DIR, div2k=PATH or realsr=PATH for your own data)"
            )
        if name in ("div2k", "realsr", "samples") and sum(n == name for n, _ in data) > 1:
            raise UserError(f"--data {name}=... is given twice; give it once")
    if any(n == "photos-valid" for n, _ in data) and not any(n == "photos" for n, _ in data):
        raise UserError("--data photos-valid=DIR needs --data photos=DIR (the training photos)")
    return data or [("samples", Path(EMBEDDED))]


def _test_sets(wanted: Wanted, prefix: str, split: Split) -> list[TestSet]:
    """One test set per test degradation this split can honour: its own LR track, or a preset
    (served by its own networks if trained, else by the main degradation's)."""
    main = wanted.degradations[0]
    return [
        TestSet(
            f"{prefix}-{short_name(deg)}", split, deg, deg if deg in wanted.degradations else main
        )
        for deg in wanted.test_degradations
        if deg == split.track or deg not in FILE_TRACKS
    ]


def _track_for(name: str, degradation: str) -> str | None:
    """The LR track of data `name` that stands for `degradation`, if it has one."""
    return degradation if degradation in TRACKS.get(name, ()) else None


def _can_train(wanted: Wanted, name: str) -> None:
    """A recipe trained on a file track needs data that has it: never a substitution."""
    main = wanted.degradations[0]
    if main in FILE_TRACKS and _track_for(name, main) is None:
        owner = next(n for n, tracks in TRACKS.items() if main in tracks)
        raise UserError(
            f"recipe {wanted.name} trains on {main!r} ({owner}'s LR files), which --data "
            f"{name} cannot provide; give --data {owner}=PATH, or a recipe with a preset"
        )


MakeSplit = Callable[..., Split]


def _maker(budget: ImageBudget, *, scale: int, max_pixels: int) -> MakeSplit:
    """`make(source, kind, split, crops=False, **fields)`: a Split of an image kind's images
    with the profile's image count (and, with `crops`, its crop) for that split."""

    def make(source: str, kind: str, split: str, *, crops: bool = False, **fields: Any) -> Split:
        fields = {**fields, "split": split, **_budget(budget, split, crops=crops)}
        return _split(source, kind, fields, scale=scale, max_pixels=max_pixels)

    return make


def _div2k(wanted: Wanted, make: MakeSplit, root: Path, photos: list[Path], reading: dict):
    """DIV2K's training split (with any photos folders: one photos split of both) and its
    valid split's test sets; its LR files only when the recipe trains on the track."""
    track = _track_for("div2k", wanted.degradations[0])
    if photos and track is not None:
        raise UserError(
            f"recipe {wanted.name} trains on DIV2K's {track} LR files; photos= folders "
            "have none: leave them out, or use a recipe with a preset"
        )
    train, valid = (make("div2k", "div2k", s, root=root, track=track) for s in ("train", "valid"))
    if photos:
        roots = (root / "DIV2K_train_HR", *photos)
        train = make(
            "photos",
            "photos",
            "train",
            roots=roots,
            valid_roots=(root / "DIV2K_valid_HR",),
            **reading,
        )
    return train, _test_sets(wanted, "div2k", valid)


def _photos(wanted: Wanted, make: MakeSplit, photos: list[Path], valid: list[Path], reading: dict):
    """The photos' training split and their validation split's test sets."""
    _can_train(wanted, "photos")
    kw = {"roots": tuple(photos), "valid_roots": tuple(valid), **reading}
    train, held_out = (make("photos", "photos", s, **kw) for s in ("train", "valid"))
    return train, _test_sets(wanted, "photos", held_out)


def _realsr_tests(wanted: Wanted, make: MakeSplit, root: Path, *, sr: bool) -> list[TestSet]:
    """RealSR's Canon and Nikon test sets: the real captures (SR), or HR with the presets."""
    tests: list[TestSet] = []
    for camera in ("Canon", "Nikon"):
        prefix = f"realsr-{camera.lower()}"
        track = "real" if sr else None
        split = make(prefix, "realsr", "test", root=root, camera=camera, track=track)
        if sr:
            tests.append(TestSet(prefix, split, "real", wanted.degradations[0]))
        else:
            tests += _test_sets(wanted, prefix, split)
    return tests


def _checked_plan(wanted: Wanted, train: Split | None, tests: list[TestSet]):
    """Refuse a plan without training data, test sets, or a track the recipe tests on; the
    in-distribution test set (the training data under the training degradation) first."""
    if train is None:
        raise UserError("--data: no training data (give photos=, div2k=, realsr= or samples=)")
    if not tests:
        raise UserError(f"recipe {wanted.name}: no test set; give test_degradations or --data")
    lacking = [d for d in wanted.test_degradations if d in FILE_TRACKS]
    lacking = [d for d in lacking if not any(t.degradation == d for t in tests)]
    if lacking:
        raise UserError(
            f"recipe {wanted.name} tests on {lacking[0]!r}, which no --data provides "
            f"(DIV2K's unknown LR track, RealSR's real captures)"
        )
    main = wanted.degradations[0]
    first = next(
        (t for t in tests if t.split.source == train.source and t.degradation == main), tests[0]
    )
    return train, [first] + [t for t in tests if t is not first]


def plan_data(
    wanted: Wanted,
    data: Sequence[tuple[str, Path]],
    budget: ImageBudget,
    *,
    sr: bool,
    max_pixels: int = MAX_PIXELS,
    skip_unreadable: bool = False,
) -> tuple[Split, list[TestSet]]:
    """The training split and the test sets for a recipe from `--data NAME=PATH` entries.

    The recipe's degradations are honoured on every data: presets and per-patch families
    degrade the HR images; a data's own LR files (DIV2K's bicubic and unknown tracks, RealSR's
    real captures) are used exactly when the degradation *is* that track, and a track the data
    lacks is an error. Training data: div2k (train HR, plus any photos folders), else photos
    (their train split), else the embedded samples, else RealSR train. Test sets, named
    `<data>-<degradation>`, the in-distribution one first: every preset test degradation on
    the embedded test photos, the photos' validation split (or photos-valid), DIV2K valid and
    RealSR's HR (deblur), then with `detail_sets` the embedded fine-detail images (`detail-*`,
    whatever the data); each data's own track where the recipe tests on it (RealSR's real
    captures always, for SR). Photos over `max_pixels` or unreadable stop the run, or are
    named and left out with `skip_unreadable`.
    """
    reading = {"max_pixels": max_pixels, "skip_unreadable": skip_unreadable}
    data = _check_data(data)
    given = dict(data)
    photos = [p for n, p in data if n == "photos"]
    make = _maker(budget, scale=wanted.scale, max_pixels=max_pixels)
    train: Split | None = None
    tests: list[TestSet] = []
    if "div2k" in given:
        train, tests = _div2k(wanted, make, given["div2k"], photos, reading)
    elif photos:
        valid = [p for n, p in data if n == "photos-valid"]
        train, tests = _photos(wanted, make, photos, valid, reading)
    if "samples" in given:
        if train is None:
            _can_train(wanted, "samples")
            train = make("samples", "samples", "train", crops=True)
        tests += _test_sets(wanted, "samples", make("samples", "samples", "test", crops=True))
    if "realsr" in given:
        if train is None:
            track = _track_for("realsr", wanted.degradations[0])
            train = make("realsr", "realsr", "train", root=given["realsr"], track=track)
        tests += _realsr_tests(wanted, make, given["realsr"], sr=sr)
    if wanted.detail_sets:  # embedded: whatever the training data
        tests += _test_sets(wanted, DETAIL, make(DETAIL, "samples", DETAIL, crops=True))
    return _checked_plan(wanted, train, tests)
