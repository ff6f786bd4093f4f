"""In-memory aligned image pairs: `Pair` and `PairSet`, the pair list every dataset is.

A PairSet holds named pairs whose target is exactly `scale`× the input, decoded once and kept in
memory as uint8 (8-bit sources) or float32 (16-bit sources and the float blur presets), so that
the loader costs a few crops per step and never decodes during training.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from twostage.errors import UserError


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
