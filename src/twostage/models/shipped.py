"""The models that ship inside the package (`twostage/weights/`): one table, their paths, cards.

`restore` without `--model` takes the shipped model of its `--scale`; `twostage models` lists
them with their card's headline (docs/models.md is the full card). Each file's SHA-256 is kept
here, so a changed or corrupted file is an error, never a silently different model.
`scripts/ship_model.py` copies a trained bundle in and writes its card data (`<name>.json`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from twostage.errors import UserError
from twostage.models.checkpoints import CheckpointError
from twostage.ops.files import read_text_bounded

__all__ = ["SHIPPED", "Shipped", "card", "shipped_for", "shipped_path", "shipped_table"]


@dataclass(frozen=True)
class Shipped:
    """One shipped pipeline bundle: its scale, file, checksum and the presets of its stages."""

    name: str
    scale: int
    file: str  # in twostage/weights/
    sha256: str
    stages: tuple[str, ...]  # model presets, stage 1 first (the card's architecture)
    summary: str
    strength: float = 1.0  # the default `restore --strength` (benchmarks/strength.py chose it)


SHIPPED: dict[str, Shipped] = {
    "blind-x4": Shipped(
        name="blind-x4",
        scale=4,
        file="blind-x4.safetensors",
        sha256="6b4cc39def4f74754e729ac991aafc1184486ad8c01bfe3f85ef279ffe762fe7",
        stages=("rcan-small", "rcan-small"),
        summary="blind ×4: map2 (any degradation → bicubic ↓2 look-alike) + specialized ×2",
        strength=0.75,  # the best of 0, 0.25, …, 1 on the training split (docs/models.md)
    ),
}


def _weights() -> Path:
    return Path(str(resources.files("twostage") / "weights"))


def shipped_for(scale: int) -> Shipped:
    """The shipped model of this scale; a UserError names the scales that ship."""
    for model in SHIPPED.values():
        if model.scale == scale:
            return model
    have = ", ".join(f"×{m.scale}" for m in SHIPPED.values())
    raise UserError(f"--scale {scale}: no shipped ×{scale} model (shipped: {have}); give --model")


def shipped_path(model: Shipped, *, verify: bool = True) -> Path:
    """The file of a shipped model, its SHA-256 checked against the table (`verify`)."""
    path = _weights() / model.file
    if not path.is_file():
        raise CheckpointError(f"the shipped model {model.name} is missing: {path} (reinstall)")
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != model.sha256:
            raise CheckpointError(
                f"{path}: SHA-256 {digest[:12]}… is not the shipped {model.sha256[:12]}… "
                "(a changed or corrupted file; reinstall twostage)"
            )
    return path


# The card fields `twostage models` prints, with their JSON types.
HEADLINE = {
    "suite_mean_margin": (int, float),  # at the default strength
    "suite_above": (int,),
    "suite": (list,),
    "strength": (int, float),  # the default strength the headline was measured at
    "detail_mean_margin": (int, float),
}


def card(model: Shipped) -> dict:
    """The card data `scripts/ship_model.py` wrote beside the weights (`<name>.json`); a
    missing or unreadable card, or one without the headline fields, is a UserError naming it."""
    path = _weights() / f"{Path(model.file).stem}.json"
    try:
        data = json.loads(read_text_bounded(path, 1 << 20))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or UTF-8
        raise UserError(f"cannot read the model card {path}: {exc}") from None
    bad = [
        key
        for key, types in HEADLINE.items()
        if not isinstance(data, dict)
        or isinstance(data.get(key), bool)
        or not isinstance(data.get(key), types)
    ]
    if bad:
        raise UserError(f"{path}: not a model card (no valid {', '.join(bad)})")
    return data


def shipped_table() -> tuple[str, list[str]]:
    """The text `twostage models` prints about the shipped models (one line each + headline),
    and one line per problem: a missing, changed or truncated file, or a broken card. The
    entry of a broken model is marked, so the rest of the listing stays readable."""
    lines = ["Shipped models (twostage restore INPUT --out DIR uses them; docs/models.md):"]
    problems: list[str] = []
    for model in SHIPPED.values():
        try:
            size = f"{shipped_path(model).stat().st_size / 1e6:.1f} MB"
        except UserError as exc:
            problems.append(str(exc))
            size = "BROKEN (see the error below)"
        lines.append(f"  {model.name}  ×{model.scale}  {size}  {model.summary}")
        try:
            data = card(model)
        except UserError as exc:
            problems.append(str(exc))
            continue
        lines.append(
            f"    at strength {data['strength']:g}: suite mean {data['suite_mean_margin']:+.2f} dB "
            f"over bicubic interpolation (above it on {data['suite_above']} of "
            f"{len(data['suite'])}), fine detail {data['detail_mean_margin']:+.2f} dB"
        )
    return "\n".join(lines), problems
