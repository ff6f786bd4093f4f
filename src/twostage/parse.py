"""The one typed parser: plain data (as YAML or JSON gives) into a frozen dataclass.

`parse(cls, data, source)` checks every key of `data` against the fields of `cls` and every
value against the field's annotation (recursively: nested dataclasses, unions, Literal,
tuples, lists, dicts, Path). A wrong key or type is a `ConfigError` naming the source and the
key, the expected type and the value; a missing required key names the key and its type.
Every float must be finite (NaN and ±Inf are refused here, in one place). Range rules that
types cannot express stay in each dataclass's `__post_init__`; its `UserError` is reported
under the key of the dataclass that raised it.

Used by training configs (config.py), recipes, degradation presets, model specs and bundle
metadata. It sits just above errors.py, so that ops/ and models/ can use it too.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from twostage.errors import UserError, short

__all__ = ["ConfigError", "check_value", "field_names", "parse", "type_name"]


class ConfigError(UserError):
    """A config file or `--set` override that is malformed, has an unknown key or a wrong type."""


class _Mismatch(Exception):
    """Internal: a value does not fit a type (turned into a ConfigError naming the key)."""


def type_name(tp: Any) -> str:
    """A type as error messages show it: `int`, `float or null`, `one of 'l1', 'l2'`, ..."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        none = " or null" if type(None) in typing.get_args(tp) else ""
        return " or ".join(names) + none
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]"
    if tp is Ellipsis:
        return "..."
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass's fields."""
    return typing.get_type_hints(cls)


def field_names(cls: type) -> list[str]:
    """The keys `parse` accepts for `cls`: its fields set by the constructor."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _kind_choices(args: tuple[Any, ...]) -> dict[str, type]:
    """A tagged union's classes by their `kind` (a Literal field); {} for other unions."""
    choices = {}
    for arg in args:
        if not dataclasses.is_dataclass(arg):
            continue
        kind = hints(arg).get("kind")
        if typing.get_origin(kind) is not Literal:
            return {}
        choices.update((k, arg) for k in typing.get_args(kind))
    return choices


def _tagged(value: dict[str, Any], choices: dict[str, type], key: str) -> Any:
    """The dataclass a mapping's `kind` names, so that its unknown keys are named as such."""
    kind = value.get("kind")
    if kind not in choices:
        raise ConfigError(f"{key}.kind: expected one of {', '.join(choices)}, got {short(kind)}")
    return _from_dict(choices[kind], value, key)


def _union(value: Any, tp: Any, key: str) -> Any:
    args = typing.get_args(tp)
    choices = _kind_choices(args)
    if choices and isinstance(value, dict):
        return _tagged(value, choices, key)
    if value is None:
        if type(None) in args:
            return None
        raise _Mismatch
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(value, arg, key)
        except _Mismatch:
            continue
    raise _Mismatch


def _scalar(value: Any, tp: Any, key: str) -> Any:
    """bool, int, float, str, Path or None: exactly that type (a numeric str is a float)."""
    if tp is float:
        return _finite_float(value, key)
    if tp is Path and isinstance(value, str | Path):
        return Path(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is type(None) and value is None:
        return None
    if tp in (bool, str) and isinstance(value, tp):
        return value
    raise _Mismatch


def _sequence(value: Any, tp: Any, key: str) -> Any:
    """A tuple (fixed length, or `tuple[X, ...]`), a list or a dict, item by item."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return {_convert(k, args[0], key): _convert(v, args[1], key) for k, v in value.items()}
    if not isinstance(value, list | tuple):
        raise _Mismatch
    if origin is list:
        return [_convert(v, args[0], key) for v in value]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(v, args[0], key) for v in value)
    if len(value) != len(args):
        raise _Mismatch
    return tuple(_convert(v, a, key) for v, a in zip(value, args))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp`, or _Mismatch. YAML quirks handled: '2e-4' (a str to PyYAML) is a
    float, a list is a tuple, a str is a Path."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _union(value, tp, key)
    if origin is Literal:
        for choice in typing.get_args(tp):
            if type(value) is type(choice) and value == choice:
                return value
        raise _Mismatch
    if tp in (type(None), bool, int, float, str, Path):
        return _scalar(value, tp, key)
    if origin in (tuple, list, dict):
        return _sequence(value, tp, key)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _Mismatch
        return _from_dict(tp, value, key)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch


def _finite_float(value: Any, key: str) -> float:
    """A number (or a numeric string: PyYAML reads '2e-4' as one) as a finite float. NaN and
    ±Inf are refused for every float field in one place: no config value means them, and
    `optim.eps=.inf` or `optim.lr=.nan` would train nothing and still report success."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Mismatch
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise _Mismatch from None
    if not math.isfinite(number):
        raise ConfigError(f"{key}: must be a finite number, got {short(value)}")
    return number


def check_value(value: Any, tp: Any, key: str) -> Any:
    """`value` converted to `tp`, or a ConfigError naming `key`, the type and the value."""
    try:
        return _convert(value, tp, key)
    except _Mismatch:
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {short(value)}") from None


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and missing required keys are errors."""
    types_ = hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    where = f"{prefix}." if prefix else ""
    for name in data:
        if name not in fields:
            raise ConfigError(
                f"unknown key {where}{short(name, quote=False)} "
                f"(valid keys{' of ' + prefix if prefix else ''}: {', '.join(fields)})"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = check_value(data[name], types_[name], where + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {where}{name} ({type_name(types_[name])})")
    try:
        return cls(**kwargs)
    except (UserError, TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix}: {exc}" if prefix else str(exc)) from None


def parse(cls: type, data: Any, source: str = "", *, prefix: str = "") -> Any:
    """Dataclass `cls` filled from plain data `data` (a mapping of its fields).

    Errors are `ConfigError`s naming `source` (a file, "recipe", ...) and the key, dotted
    below `prefix` (e.g. `train.optim.lr`)."""
    lead = f"{source}: " if source else ""
    if not isinstance(data, dict):
        where = prefix or "the top level"
        raise ConfigError(f"{lead}expected a mapping at {where}, got {short(data)}")
    try:
        return _from_dict(cls, data, prefix)
    except ConfigError as exc:
        raise ConfigError(f"{lead}{exc}") from None
