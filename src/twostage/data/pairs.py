"""Aligned image pairs: `Pair` and `PairSet`, the pair list every dataset is, and `Lazy`.

A PairSet holds named pairs whose target is exactly `scale`× the input, as uint8 (8-bit
sources) or float32 (16-bit sources and the float blur presets). Small sets are made once and
kept (the loader then costs a few crops per step); `PairSet.lazy` makes each pair on first use
and keeps the recent ones in a cache of bounded bytes (`Lazy`), so that memory stays bounded
at any data size (`limits.CACHE_BYTES`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

import numpy as np
from torch.utils.data import get_worker_info

from twostage.errors import UserError
from twostage.limits import CACHE_BYTES

T = TypeVar("T")


def _nbytes(item: object) -> int:
    if isinstance(item, np.ndarray):
        return item.nbytes
    if isinstance(item, Pair):
        return item.input.nbytes + item.target.nbytes
    return 0


class Lazy(Sequence[T], Generic[T]):
    """`make(i)` for i < n, made on first use; the most recently used items are kept while
    they hold at most `max_bytes` together (the newest is always kept; a loader worker keeps
    its share of it)."""

    def __init__(self, n: int, make: Callable[[int], T], *, max_bytes: int = CACHE_BYTES) -> None:
        self._n, self._make, self._max = n, make, max_bytes
        self._cache: OrderedDict[int, T] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return self._n

    def _budget(self) -> int:
        """max_bytes, shared by the DataLoader's workers (each keeps its share), so that a
        run holds about max_bytes of cached images whatever its data.num_workers."""
        info = get_worker_info()
        return self._max if info is None else self._max // info.num_workers

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        index %= self._n
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        item = self._make(index)
        self._cache[index] = item
        self._bytes += _nbytes(item)
        while self._bytes > self._budget() and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= _nbytes(old)
        return item


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


def _checked(p: Pair, *, scale: int, name: str) -> Pair:
    """`p` with its arrays as stored, or UserError when target is not scale × input."""
    where = f"dataset {name}, pair {p.name}"
    inp = _as_stored(p.input, f"{where} input")
    tgt = _as_stored(p.target, f"{where} target")
    h, w = inp.shape[:2]
    if tgt.shape[:2] != (h * scale, w * scale):
        raise UserError(
            f"{where}: target is {tgt.shape[0]}×{tgt.shape[1]} but input is "
            f"{h}×{w}; scale {scale} needs {h * scale}×{w * scale}"
        )
    return Pair(p.name, inp, tgt)


def _check_names(names: list[str], name: str) -> None:
    if not names:
        raise UserError(f"dataset {name} has no images")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise UserError(f"dataset {name}: two pairs are named {n}")
        seen.add(n)


class PairSet(Sequence[Pair]):
    """Named pairs with target = scale × input, each validated when it is made."""

    def __init__(self, pairs: Iterable[Pair], *, scale: int, name: str) -> None:
        self.scale = scale
        self.name = name
        self._pairs: Sequence[Pair] = [_checked(p, scale=scale, name=name) for p in pairs]
        self._names = [p.name for p in self._pairs]
        _check_names(self._names, name)

    @classmethod
    def lazy(
        cls, names: list[str], make: Callable[[int], Pair], *, scale: int, name: str
    ) -> PairSet:
        """Pairs made by `make(i)` on first use, kept in a bounded cache (`Lazy`)."""
        pairs = cls.__new__(cls)
        pairs.scale, pairs.name, pairs._names = scale, name, list(names)
        _check_names(pairs._names, name)
        pairs._pairs = Lazy(len(names), lambda i: _checked(make(i), scale=scale, name=name))
        return pairs

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
        return list(self._names)

    def __repr__(self) -> str:
        return f"PairSet({self.name!r}, {len(self)} pairs, scale={self.scale})"
