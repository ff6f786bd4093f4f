"""Which images train and test a recipe: the training split and the named test sets.

`plan_data` turns `--data NAME=PATH` entries (the embedded samples, DIV2K, RealSR) into one
training `Split` (HR images, with inputs per degradation made once, lazily) and the `TestSet`s of
the report, the in-distribution one first. How much of each it uses (crops, image counts) comes
from the run's profile (`ImageBudget`, which config.Profile satisfies).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from twostage.data.folders import div2k, realsr
from twostage.data.pairs import PairSet
from twostage.data.samples import load_samples
from twostage.data.split_images import centre_crop, degraded_image, domain_image, instances
from twostage.errors import UserError
from twostage.ops.imageio import to_float, to_uint8

EMBEDDED = "embedded"  # `--data samples=embedded`: the photos bundled with scikit-image
DATA_NAMES = ("samples", "div2k", "realsr")
FILE_TRACKS = ("unknown", "real")  # degradations read from files, not synthesised by a preset


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


def short_name(degradation: str) -> str:
    """A label for a degradation: the preset name, or a YAML file's stem."""
    return Path(degradation).stem if degradation.endswith((".yaml", ".yml")) else degradation


@dataclass
class Split:
    """The HR images of one split, with their inputs per degradation (computed once, lazily).

    `given` holds inputs read from files (DIV2K's LR tracks, RealSR's LR4), keyed by the
    degradation name they stand for; other degradations are synthesised from HR with a preset.
    """

    source: str
    names: list[str]
    hr: list[np.ndarray]  # uint8 H×W×3, mod-cropped to the recipe's scale
    data_seed: int = 0
    given: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _cache: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)

    def inputs(self, degradation: str, *, scale: int) -> list[np.ndarray]:
        if degradation in self.given:
            return self.given[degradation]
        key = ("degraded", degradation)
        if key not in self._cache:
            self._cache[key] = [
                degraded_image(img, degradation, name=name, scale=scale, seed=self.data_seed)
                for name, img in zip(self.names, self.hr)
            ]
        return self._cache[key]

    def domain(self, domain: str) -> list[np.ndarray]:
        key = ("domain", domain)
        if key not in self._cache:
            self._cache[key] = [
                domain_image(img, domain, name=name, seed=self.data_seed)
                for name, img in zip(self.names, self.hr)
            ]
        return self._cache[key]

    def instances(self, k: int) -> Split:
        """The same images, each k times as NAME~0…NAME~(k-1): k fixed draws of a per-patch
        family per image (the specialized stage's training inputs, `DatasetSpec.instances`)."""
        items = instances(list(zip(self.names, self.hr)), k)
        return Split(self.source, [n for n, _ in items], [h for _, h in items], self.data_seed)

    def describe(self) -> dict:
        """What identifies these images, for the cache hash."""
        digest = hashlib.sha256()
        for name, img in zip(self.names, self.hr):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(img).tobytes())
        return {
            "source": self.source,
            "images": len(self.names),
            "seed": self.data_seed,
            "content": digest.hexdigest()[:16],
        }


@dataclass(frozen=True)
class TestSet:
    """One table of the report: a split seen through one degradation."""

    name: str  # "<data>-<degradation>"
    split: Split
    degradation: str  # what its inputs are (a preset or a given track)
    networks_of: str  # the training degradation whose networks serve it


def _embedded(split: str, budget: ImageBudget, scale: int) -> Split:
    items = load_samples(split)
    limit = budget.train_images if split == "train" else budget.test_images
    if limit is not None:
        items = items[:limit]
    crop = budget.train_crop if split == "train" and budget.train_crop else budget.hr_crop
    return Split(
        "samples",
        [n for n, _ in items],
        [centre_crop(img, crop=crop, mod=scale) for n, img in items],
    )


def _pairs_split(source: str, pairs: PairSet, *, given: str | None) -> Split:
    """A Split from real pairs: HR from the targets; the inputs kept as degradation `given`."""
    items = list(pairs)
    hr = [p.target if p.target.dtype == np.uint8 else to_uint8(p.target) for p in items]
    split = Split(source, [p.name for p in items], hr)
    if given is not None:
        split.given[given] = [
            to_float(p.input) if p.input.dtype == np.uint8 else p.input for p in items
        ]
    return split


def _check_data(data: dict[str, Path]) -> dict[str, Path]:
    bad = [k for k in data if k not in DATA_NAMES]
    if bad:
        raise UserError(
            f"--data {bad[0]}=...: unknown data name; choose from {', '.join(DATA_NAMES)}"
        )
    if not data:
        data = {"samples": Path(EMBEDDED)}
    if "samples" in data and str(data["samples"]) != EMBEDDED:
        raise UserError(
            f"--data samples={data['samples']}: only samples={EMBEDDED} exists "
            "(use div2k=PATH or realsr=PATH for your own data)"
        )
    return data


def _synthetic_sets(wanted: Wanted, prefix: str, split: Split) -> list[TestSet]:
    """One test set per preset test degradation, served by its own networks if trained."""
    main = wanted.degradations[0]
    return [
        TestSet(
            f"{prefix}-{short_name(deg)}", split, deg, deg if deg in wanted.degradations else main
        )
        for deg in wanted.test_degradations
        if deg not in FILE_TRACKS
    ]


def _div2k(wanted: Wanted, root: Path, budget: ImageBudget, *, sr: bool, track: str):
    main = wanted.degradations[0]
    given = main if sr else None
    train = _pairs_split(
        "div2k",
        div2k(root, split="train", track=track, scale=4, limit=budget.train_images),
        given=given,
    )
    valid = _pairs_split(
        "div2k",
        div2k(root, split="valid", track=track, scale=4, limit=budget.test_images),
        given=given,
    )
    tests = [TestSet(f"div2k-{main}", valid, main, main)] if sr else []
    return train, tests or _synthetic_sets(wanted, "div2k", valid)


def _realsr(wanted: Wanted, root: Path, budget: ImageBudget, *, sr: bool, train: bool):
    """RealSR's two test sets, and its training split when `train` (no other data trains)."""
    tests: list[TestSet] = []
    for camera in ("Canon", "Nikon"):
        prefix = f"realsr-{camera.lower()}"
        split = _pairs_split(
            prefix,
            realsr(root, camera=camera, split="test", scale=4, limit=budget.test_images),
            given="real" if sr else None,
        )
        if sr:
            tests.append(TestSet(prefix, split, "real", wanted.degradations[0]))
        else:
            tests += _synthetic_sets(wanted, prefix, split)
    if not train:
        return None, tests
    pairs = realsr(root, camera="both", split="train", scale=4, limit=budget.train_images)
    return _pairs_split("realsr", pairs, given="real" if sr else None), tests


def plan_data(
    wanted: Wanted, data: dict[str, Path], budget: ImageBudget, *, sr: bool, track: str
) -> tuple[Split, list[TestSet]]:
    """The training split and the test sets for a recipe from `--data NAME=PATH` entries.

    samples=embedded: the bundled photos (train/test split), degraded with the recipe's presets.
    div2k=ROOT: DIV2K train/valid, the training data when given. SR recipes (`sr`) train and
      test on its LR `track` (unknown for sr-x4, bicubic for bicubic-x4); deblur degrades its
      HR images with the presets.
    realsr=ROOT: RealSR V3 Canon and Nikon test sets as extra unseen test sets (their real LR4
      for SR, their HR degraded with the presets for deblur); the training data when alone.
    Test sets are named `<data>-<degradation>`; the first is the in-distribution one.
    """
    data = _check_data(data)
    train: Split | None = None
    test_sets: list[TestSet] = []
    if "div2k" in data:
        train, test_sets = _div2k(wanted, Path(data["div2k"]), budget, sr=sr, track=track)
    if "samples" in data:
        train = train or _embedded("train", budget, wanted.scale)
        test_sets += _synthetic_sets(wanted, "samples", _embedded("test", budget, wanted.scale))
    if "realsr" in data:
        root = Path(data["realsr"])
        real_train, real_tests = _realsr(wanted, root, budget, sr=sr, train=train is None)
        train = train or real_train
        test_sets += real_tests
    if train is None or not test_sets:
        raise UserError(f"recipe {wanted.name}: no test set; give test_degradations or --data")
    # The in-distribution set (the training data under the training degradation) goes first.
    main = wanted.degradations[0]
    first = next(
        (t for t in test_sets if t.split.source == train.source and t.degradation == main),
        test_sets[0],
    )
    return train, [first] + [t for t in test_sets if t is not first]
