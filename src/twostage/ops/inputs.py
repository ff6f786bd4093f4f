"""Finding input images: files, folders (recursive) and globs, in order, once each, without
ever following a symlinked folder found on the way (a link loop cannot make a search endless)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from twostage.errors import UserError
from twostage.ops.imageio import IMAGE_SUFFIXES

__all__ = ["expand_inputs", "is_image_file"]


def is_image_file(path: Path) -> bool:
    """A regular, visible file with an image suffix (hidden: e.g. atomic_path's temporaries)."""
    hidden = path.name.startswith(".")
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not hidden


def _folder_images(folder: Path) -> list[Path]:
    """Images in `folder` and below; symlinked sub-folders are not descended (`Path.rglob`)."""
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def _hidden(part: str) -> bool:
    return part.startswith(".") and part not in (".", "..")


def _glob(pattern: str) -> list[Path]:
    """Sorted matches of a glob pattern, where `**` never descends a symlinked folder (a link
    back up would loop for ever) and, as `glob.glob`, `*` skips hidden names."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root = Path(*parts[:first]) if first else Path()
    rest = Path(*parts[first:])
    hidden_ok = any(_hidden(part) for part in rest.parts)
    return sorted(
        m
        for m in root.glob(str(rest))
        if hidden_ok or not any(_hidden(p) for p in m.relative_to(root).parts)
    )


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files, folders (searched recursively, sorted) and globs → image files, in order, once each.

    Symlinked files are taken; symlinked folders are descended only when named themselves, never
    when found inside a folder or by a glob (so a link loop cannot make the search endless).

    A file named explicitly is kept whatever its suffix (reading it reports any problem). A
    missing path, a glob that matches nothing, or no image at all raises UserError.
    """
    items = list(inputs)
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found.extend(_folder_images(path))
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise UserError(f"{item}: not a regular file or folder (a FIFO, device or socket)")
        elif glob.has_magic(str(item)):
            matches = _glob(str(item))
            if not matches:
                raise UserError(f"no file matches {item}")
            for m in matches:
                if m.is_dir():
                    if not m.is_symlink():  # a matched link to a folder is not descended
                        found.extend(_folder_images(m))
                elif is_image_file(m):
                    found.append(m)
        else:
            raise UserError(f"no such file or folder: {item}")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError(f"no images found in {', '.join(str(i) for i in items) or 'no inputs'}")
    return unique
