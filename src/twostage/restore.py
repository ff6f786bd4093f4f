"""`twostage restore`: run a model or pipeline over files, folders and globs of photos.

- Output names keep the input's stem (plus `--suffix`) and, for a folder input, its sub-folder
  structure below that folder. An existing output is skipped with a note unless `--overwrite`;
  an output that is an input file, or lies outside `--out`, is refused with or without it.
- `--strength` blends stage 1 with bicubic (`pipeline` module docstring); without it the
  model's default (a shipped model's from `SHIPPED`, a bundle's from its metadata). `--stage2`
  puts the model's stage 1 in front of another network; `--tta` averages the 8 flips and
  rotations of the input (8× the time).
- Tiling is automatic by default (`--tile auto`): the tile is chosen from free memory, so a
  large image never runs out of memory (`pipeline.auto_tile`). The output is bounded too: one
  over `max_output_pixels` (`--max-output-pixels`) is refused from the input's header, before
  anything is decoded, and the output buffer holds the 8- or 16-bit values that are written
  (float only for gray input, whose three channels are averaged first).
- 16-bit input gives 16-bit output where the format holds it (png, tif); else 8-bit, noted.
- Alpha is upscaled on its own with MATLAB bicubic and written back; formats without alpha
  (jpg, bmp) drop it with a warning.
- Gray input (R = G = B after reading) is restored as RGB and written gray: the mean of the
  three output channels, so a gray photo stays a gray file.
- EXIF orientation is applied when reading (`ops.imageio.read_image`).
- A file that cannot be read or written is one line on stderr naming it; the others are still
  processed and the number of failures is returned (the CLI exits 2 when it is not 0).
- Outputs are written atomically: Ctrl-C never leaves a half-written image, and temporary
  files a killed run left in the output folders are removed on the next run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from twostage.errors import UserError
from twostage.limits import MAX_OUTPUT_PIXELS, MAX_PIXELS
from twostage.models.shipped import SHIPPED, Shipped, shipped_for, shipped_path
from twostage.ops.files import check_outputs, check_suffix, remove_stale_temps
from twostage.ops.imageio import (
    check_output_size,
    image_size,
    read_image,
    write_image,
)
from twostage.ops.inputs import expand_inputs
from twostage.ops.progress import bar, on_terminal, stage_line
from twostage.ops.resize import imresize
from twostage.pipeline import OnnxPipeline, Pipeline, Tile, load_pipeline, with_stage2

__all__ = ["open_model", "plan_outputs", "restore_files"]

NO_ALPHA = ("jpg", "jpeg", "bmp")
SIXTEEN_BIT = ("png", "tif", "tiff")


def plan_outputs(
    inputs: list[Path], *, out: Path, suffix: str, ext: str
) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs; a folder input keeps its sub-folders below `out`.

    Two inputs that would write the same output, an output that is an input, and one outside
    `out` are errors naming them.
    """
    check_suffix(suffix)
    plan: list[tuple[Path, Path]] = []
    seen: dict[Path, Path] = {}
    roots = [Path(p) for p in inputs if Path(p).is_dir()]
    for file in expand_inputs(inputs):
        root = next((r for r in roots if file.is_relative_to(r)), None)
        if root is not None and file.resolve().is_relative_to(out.resolve()):
            continue  # earlier outputs inside an input folder are not inputs
        sub = file.parent.relative_to(root) if root is not None else Path()
        target = out / sub / f"{file.stem}{suffix}.{ext}"
        if target in seen:
            raise UserError(
                f"{seen[target]} and {file} would both be written to {target}; "
                "restore them separately or use --suffix"
            )
        seen[target] = file
        plan.append((file, target))
    if not plan:
        raise UserError(f"nothing to restore: every input image lies inside --out {out}")
    check_outputs(plan, out=out)
    return plan


def _check_output_size(source: Path, target: Path, scale: int, max_output_pixels: int) -> None:
    """Refuse, from the header alone, an input whose ×`scale` output is over the limit or
    larger than the target's format holds."""
    width, height = image_size(source)
    check_output_size(target, height * scale, width * scale)
    pixels = width * scale * height * scale
    if pixels > max_output_pixels:
        raise UserError(
            f"{source}: the ×{scale} output would be {width * scale}×{height * scale} "
            f"({pixels / 1e6:g} MP), over the limit of {max_output_pixels / 1e6:g} MP "
            "(--max-output-pixels raises it)"
        )


def _note(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def restore_files(
    model: str | Path | None,
    inputs: list[Path],
    *,
    out: Path,
    scale: int | None = None,
    tile: Tile = "auto",
    tile_pad: int = 16,
    device: str = "auto",
    precision: str = "auto",
    suffix: str = "",
    ext: str = "png",
    overwrite: bool = False,
    quiet: bool = False,
    max_pixels: int = MAX_PIXELS,
    max_output_pixels: int = MAX_OUTPUT_PIXELS,
    strength: float | None = None,
    tta: bool = False,
    stage2: Path | None = None,
) -> int:
    """Restore every input image into `out`; returns the number of files that failed.

    `model` None: the shipped model of `scale` (default 4, checksum-verified); else `scale`,
    when given, must be the model's. `precision`: auto (bf16 where the hardware runs it
    natively), fp32, bf32 or bf16; the chosen mode is printed once. An output over
    `max_output_pixels` is refused, naming the file, before its input is decoded.
    """
    ext = ext.lower().lstrip(".")
    out = Path(out)
    plan = plan_outputs([Path(p) for p in inputs], out=out, suffix=suffix, ext=ext)
    if model is None:
        model = shipped_for(scale or 4).name
        _note(f"model: the shipped {model} (docs/models.md)")
    pipe = open_model(model, scale=scale, device=device, precision=precision, stage2=stage2)
    pipe.resolve_strength(strength)  # a bad or unusable strength: one error, before any file
    for folder in {target.parent for _, target in plan}:
        remove_stale_temps(folder)
    _note(f"precision: {pipe.precision}")
    written = skipped = failed = 0
    for source, target in bar(plan, quiet=quiet, desc="images", unit="img"):
        start = time.perf_counter()
        if target.exists() and not overwrite:
            _note(f"skip {source}: {target} exists (--overwrite to replace it)")
            skipped += 1
            continue
        try:
            _restore_one(pipe, source, target, ext=ext, tile=tile, tile_pad=tile_pad,
                         quiet=quiet, max_pixels=max_pixels, max_output_pixels=max_output_pixels,
                         strength=strength, tta=tta)  # fmt: skip
            written += 1
            if not (quiet or on_terminal()):
                stage_line(f"restored {source} → {target}", time.perf_counter() - start)
        except (UserError, OSError) as exc:
            message = str(exc) if str(source) in str(exc) else f"{source}: {exc}"
            _note(f"error: {message}")
            failed += 1
    summary = f"restored {written} image(s) into {out}"
    if skipped:
        summary += f", skipped {skipped} existing"
    if failed:
        summary += f", {failed} failed"
    print(summary)
    return failed


def open_model(
    model: str | Path | None,
    *,
    scale: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    stage2: Path | None = None,
) -> Pipeline | OnnxPipeline:
    """The pipeline to run: a model file, a shipped model's name (a `str` such as "blind-x4"),
    or None: the shipped model of `scale` (default 4). A given `scale` must be the model's.
    A shipped model gets its table's default strength; `stage2` replaces the model's stage 2
    (`pipeline.with_stage2`). `restore_files` and `twostage.load` both load through here."""
    if model is None:
        model = shipped_for(scale or 4).name
    shipped = SHIPPED[model] if isinstance(model, str) and model in SHIPPED else None
    if shipped is not None:
        model = shipped_path(shipped)
    else:  # the shipped file named by its path is the shipped model too
        shipped = next((m for m in SHIPPED.values() if _same_file(model, m)), None)
    pipe = load_pipeline(model, device=device, precision=precision)
    if shipped is not None and isinstance(pipe, Pipeline):
        pipe.strength = shipped.strength
    if stage2 is not None:
        pipe = with_stage2(pipe, stage2, precision=precision)
    if scale is not None and pipe.scale != scale:
        raise UserError(f"--scale {scale}: {model} is a ×{pipe.scale} model")
    return pipe


def _same_file(model: str | Path, shipped: Shipped) -> bool:
    try:
        return Path(model).samefile(shipped_path(shipped, verify=False))
    except (OSError, UserError):  # a missing file: load_pipeline names it
        return False


def _restore_one(
    pipe: Pipeline | OnnxPipeline,
    source: Path,
    target: Path,
    *,
    ext: str,
    tile: Tile,
    tile_pad: int,
    quiet: bool,
    max_pixels: int,
    max_output_pixels: int,
    strength: float | None,
    tta: bool,
) -> None:
    """Read `source`, restore it and write `target` in its bit depth, with its alpha, gray kept
    gray; what the target's format cannot hold (16 bits, alpha) is noted and dropped."""
    _check_output_size(source, target, pipe.scale, max_output_pixels)
    img, info = read_image(source, max_pixels=max_pixels)
    bit_depth = info.bit_depth
    if bit_depth == 16 and ext not in SIXTEEN_BIT:
        _note(f"warning: {source}: .{ext} cannot hold 16 bits; written as 8-bit")
        bit_depth = 8
    dtype = np.float32 if info.gray else np.uint16 if bit_depth == 16 else np.uint8
    result = pipe.restore(img, tile=tile, tile_pad=tile_pad, progress=not quiet, dtype=dtype,
                          strength=strength, tta=tta)  # fmt: skip
    del img
    alpha = info.alpha
    if alpha is not None and ext in NO_ALPHA:
        _note(f"warning: {source}: .{ext} cannot hold alpha; it is dropped")
        alpha = None
    if alpha is not None:
        alpha = np.clip(imresize(alpha.astype(np.float32), float(pipe.scale)), 0.0, 1.0)
    if info.gray:
        result = result.mean(axis=2)
    write_image(target, result, bit_depth=bit_depth, alpha=alpha)
