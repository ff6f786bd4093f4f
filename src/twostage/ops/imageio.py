"""Reading and writing images: one float32 RGB [0, 1] representation inside, atomic writes out.

Size limit: an image over `max_pixels` (default `MAX_PIXELS`, 100 MP; `--max-pixels` raises it)
is refused from its header, before anything is decoded: a 400 KB PNG can hold 12000×12000
pixels that decode to gigabytes. Animated GIF/WebP/PNG: the first frame is read, with an
`InputWarning` saying so.

Formats: PNG, JPEG, TIFF, BMP, WebP; 1/2/4/8/16-bit; gray, gray+alpha, RGB, RGBA, palette (with
tRNS transparency). EXIF orientation is applied, so a phone photo comes out upright.

Sample values: unsigned 8/16-bit integers are scaled by their full range; float samples are
taken as [0, 1] (values outside are clipped, with an `InputWarning`). Signed or 32/64-bit
integer samples have no defined white level and are refused, as are NaN and Inf samples. A
multi-page TIFF is read from its first page, with an `InputWarning`.

Routes: Pillow for everything 8-bit; 16-bit PNG through `pypng` (Pillow truncates 16-bit RGB PNG
to 8 bits) and TIFF through `tifffile` (keeps 16-bit RGB; Pillow is the fallback for codecs
tifffile cannot decode without `imagecodecs`, such as LZW).
"""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import tifffile
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from twostage.errors import InputWarning, UserError
from twostage.limits import FORMAT_MAX_SIDE, MAX_PIXELS
from twostage.ops.files import atomic_path

Array = TypeVar("Array", np.ndarray, torch.Tensor)

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageInfo",
    "ImageReadError",
    "check_output_size",
    "grid_levels",
    "image_size",
    "image_to_tensor",
    "quantize",
    "read_image",
    "tensor_to_image",
    "to_float",
    "to_uint8",
    "write_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
SIXTEEN_BIT_SUFFIXES = (".png", ".tif", ".tiff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_ORIENTATION_TAG = 0x0112


class ImageReadError(UserError):
    """An image file that is missing, empty, truncated, corrupt or not an image."""

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        super().__init__(f"cannot read image {path}: {cause}")
        self.path = Path(path)
        self.cause = cause


@dataclass(frozen=True, eq=False)
class ImageInfo:
    """What `read_image` learned beyond the RGB pixels.

    bit_depth: 8, or 16 for 16-bit (and float) sources, so outputs can keep the precision.
    alpha: H×W float32 [0, 1] when the file had transparency (alpha channel or tRNS), else None.
    gray: the file had a single colour channel (the RGB returned has three equal channels).
    """

    bit_depth: int
    alpha: np.ndarray | None
    gray: bool
    path: Path | None = None


# ----------------------------------------------------------------------------- conversions


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] → uint8 with floor(x·255 + 0.5), clipped (MATLAB's half away from zero)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        img = img.astype(np.float64) / 65535.0
    return _levels_in_blocks(img, 255, np.uint8)


def to_uint16(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] → uint16 with floor(x·65535 + 0.5), clipped."""
    img = np.asarray(img)
    if img.dtype == np.uint16:
        return img
    if img.dtype == np.uint8:
        return img.astype(np.uint16) * 257
    return _levels_in_blocks(img, 65535, np.uint16)


_QUANTISE_BLOCK = 1 << 22  # float64 values per block (32 MiB): memory stays flat in image size


def _levels_in_blocks(img: np.ndarray, levels: int, dtype: type) -> np.ndarray:
    """`grid_levels` in float64 (NaN → 0) into `dtype`, a block of rows at a time so that a large
    image needs no full-size float64 temporaries."""
    out = np.empty(img.shape, dtype)
    if img.ndim == 0 or img.size == 0:
        rows, src, dst = 1, img.reshape(1, -1), out.reshape(1, -1)
    else:
        rows, src, dst = max(1, _QUANTISE_BLOCK // max(1, img[0].size)), img, out
    for start in range(0, src.shape[0], rows):
        block = np.nan_to_num(src[start : start + rows].astype(np.float64), copy=False, nan=0.0)
        dst[start : start + rows] = grid_levels(block, levels)
    return out


def grid_levels(x: Array, levels: float) -> Array:
    """THE rounding to a grid of `levels` steps: floor(clip(x, 0, 1)·levels + 0.5), half away
    from zero as MATLAB, as integer-valued floats. Computed in x's own float type (a numpy array,
    or a torch tensor on any device, ONNX-exportable): the caller picks the precision."""
    if isinstance(x, torch.Tensor):
        return torch.floor(x.clamp(0.0, 1.0) * levels + 0.5)
    y = np.clip(x, 0.0, 1.0)
    y *= levels
    y += 0.5
    return np.floor(y, out=y)


def quantize(x: Array, *, bit_depth: int = 8) -> Array:
    """x rounded to the `bit_depth` grid and back to [0, 1] (an image as stored on disk), in its
    own float type: numpy or torch."""
    levels = float(2**bit_depth - 1)
    return grid_levels(x, levels) / levels


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 (or uint16) → float32 in [0, 1]; float input is returned as float32."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / np.float32(255)
    if img.dtype == np.uint16:
        return (img.astype(np.float64) / 65535.0).astype(np.float32)
    return img.astype(np.float32, copy=False)


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """H×W×3 image (float [0, 1] or uint8) → 1×3×H×W float32 tensor."""
    arr = to_float(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """1×3×H×W or 3×H×W tensor → H×W×3 float32 array, clamped to [0, 1] (models overshoot)."""
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"expected a 3×H×W tensor, got shape {tuple(t.shape)}")
    arr = t.detach().to("cpu", torch.float32).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(arr)


# ----------------------------------------------------------------------------- reading


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1..8 on an H×W(×C) array, as PIL.ImageOps.exif_transpose does it."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _split(
    values: np.ndarray, maxval: float, path: Path, bit_depth: int, gray: bool, has_alpha: bool
) -> tuple[np.ndarray, ImageInfo]:
    """H×W×C integer or float channels → float32 RGB and ImageInfo."""
    if np.issubdtype(values.dtype, np.floating):
        _check_float_samples(values, path)
    arr = values.astype(np.float64) / maxval if maxval != 1.0 else values.astype(np.float64)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    alpha = None
    if has_alpha:
        alpha = np.ascontiguousarray(np.clip(arr[:, :, -1], 0, 1), dtype=np.float32)
        arr = arr[:, :, :-1]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    rgb = np.ascontiguousarray(np.clip(arr[:, :, :3], 0, 1), dtype=np.float32)
    return rgb, ImageInfo(bit_depth=bit_depth, alpha=alpha, gray=gray, path=path)


def _check_float_samples(values: np.ndarray, path: Path) -> None:
    """Float samples: NaN or Inf is refused here, so that no later step blames the model for
    it; values outside [0, 1] are clipped, with a warning saying so."""
    if not np.isfinite(values).all():
        raise ImageReadError(path, "holds NaN or Inf sample values")
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if low < 0.0 or high > 1.0:
        warnings.warn(
            f"{path}: float samples span [{low:g}, {high:g}]; values outside [0, 1] are clipped",
            InputWarning,
            stacklevel=5,
        )


def _check_sample_type(dtype: np.dtype, path: Path) -> None:
    """Refuse integer samples other than unsigned 8/16-bit: their white level is undefined
    (dividing int32 by 65535 gave all-white pictures)."""
    if np.issubdtype(dtype, np.integer) and dtype not in (np.uint8, np.uint16):
        raise ImageReadError(
            path,
            f"{dtype.name} TIFF samples have no defined white level "
            "(unsigned 8/16-bit or float [0, 1] TIFFs are read)",
        )


def _warn_pages(path: Path, pages: int) -> None:
    if pages > 1:
        warnings.warn(
            f"{path} has {pages} pages; only the first is used", InputWarning, stacklevel=5
        )


def _exif_orientation(path: Path) -> int:
    """The EXIF orientation Pillow finds in the file (1 when none)."""
    try:
        with Image.open(path) as im:
            return int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # no readable EXIF is not an error: the pixels were read already
        return 1


def _read_png16(path: Path) -> tuple[np.ndarray, ImageInfo]:
    import png  # pypng: only 16-bit PNG needs it

    try:
        width, height, rows, meta = png.Reader(filename=str(path)).asDirect()
        planes = int(meta["planes"])
        values = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except png.Error as exc:
        raise ImageReadError(path, f"truncated or corrupt ({' '.join(str(exc).split())})") from None
    values = values.reshape(height, width, planes)
    values = _apply_orientation(values, _exif_orientation(path))
    maxval = float(2 ** int(meta["bitdepth"]) - 1)  # sBIT may lower it below 16
    return _split(values, maxval, path, 16, bool(meta["greyscale"]), bool(meta["alpha"]))


def _read_tiff(path: Path) -> tuple[np.ndarray, ImageInfo] | None:
    """TIFF through tifffile; None when Pillow should try instead (a codec tifffile lacks)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        photometric = int(page.photometric)
        # MINISWHITE=0, MINISBLACK=1, RGB=2; palette, CMYK, YCbCr, bilevel: leave to Pillow.
        if photometric not in (0, 1, 2) or page.bitspersample not in (8, 16, 32, 64):
            return None
        _check_sample_type(np.dtype(page.dtype), path)
        try:
            values = page.asarray()
        except (KeyError, ValueError, NotImplementedError) as exc:
            if "imagecodecs" in str(exc) and page.bitspersample > 8:
                raise ImageReadError(
                    path, f"{page.compression.name} 16-bit TIFF needs `pip install imagecodecs`"
                ) from None
            if "imagecodecs" in str(exc):
                return None
            raise
        _warn_pages(path, len(tif.pages))
        axes = page.axes
        orientation_tag = page.tags.get(274)
        orientation = int(orientation_tag.value) if orientation_tag is not None else 1
    if axes.startswith("S") and values.ndim == 3:  # planar: S×Y×X → Y×X×S
        values = np.moveaxis(values, 0, -1)
    if values.ndim not in (2, 3):
        raise ImageReadError(path, f"unsupported TIFF layout {axes} {values.shape}")
    values = _apply_orientation(values, orientation)
    channels = 1 if values.ndim == 2 else values.shape[2]
    if values.dtype == np.uint8:
        maxval, depth = 255.0, 8
    elif values.dtype == np.uint16:
        maxval, depth = 65535.0, 16
    elif np.issubdtype(values.dtype, np.floating):
        maxval, depth = 1.0, 16
    else:
        return None
    gray = channels in (1, 2)
    has_alpha = channels in (2, 4)
    if photometric == 0 and gray:  # MINISWHITE: 0 is white; an alpha plane keeps its sense
        values = values.copy()
        plane = values[..., 0] if channels == 2 else values
        plane[...] = maxval - plane
    return _split(values, maxval, path, depth, gray, has_alpha)


@contextlib.contextmanager
def _own_size_limit() -> Iterator[None]:
    """Pillow without its own pixel limit: `read_image` applies `max_pixels` itself."""
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _read_pillow(path: Path) -> tuple[np.ndarray, ImageInfo]:
    with _own_size_limit(), Image.open(path) as opened:
        frames = int(getattr(opened, "n_frames", 1))
        if opened.format == "TIFF":
            _refuse_pillow_tiff_integers(opened, path)
            _warn_pages(path, frames)
        elif frames > 1:
            warnings.warn(
                f"{path} is animated ({frames} frames); only the first is used",
                InputWarning,
                stacklevel=4,
            )
        opened.load()
        im = ImageOps.exif_transpose(opened)
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":  # 16-bit gray (mode I: Pillow's 16-bit PGM)
        values = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        return _split(values, 65535.0, path, 16, True, False)
    if mode == "F":
        return _split(np.asarray(im, dtype=np.float64), 1.0, path, 16, True, False)
    has_alpha = "A" in im.getbands() or "transparency" in im.info
    if mode in ("1", "L", "LA", "La"):
        im = im.convert("LA" if has_alpha else "L")
        gray = True
    else:
        im = im.convert("RGBA" if has_alpha else "RGB")
        gray = False
    return _split(np.asarray(im), 255.0, path, 8, gray, has_alpha)


def _refuse_pillow_tiff_integers(im: Image.Image, path: Path) -> None:
    """The TIFFs Pillow decodes for tifffile: signed or 32-bit integer samples are refused."""
    sample_format = im.tag_v2.get(339, 1)  # TIFF SampleFormat: 1 uint, 2 int, 3 float
    sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
    bits = im.tag_v2.get(258, (8,))  # BitsPerSample
    bits = bits[0] if isinstance(bits, tuple) else bits
    if sample_format == 2 or (sample_format == 1 and int(bits) > 16):
        kind = "int" if sample_format == 2 else "uint"
        _check_sample_type(np.dtype(f"{kind}{int(bits)}"), path)


def _header_size(path: Path, head: bytes) -> tuple[int, int]:
    """(width, height) from the file header, without decoding any pixels."""
    if head.startswith(_PNG_SIGNATURE) and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:4] in _TIFF_SIGNATURES:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    with _own_size_limit(), Image.open(path) as im:
        return im.size


def _check_size(path: Path, head: bytes, max_pixels: int) -> None:
    width, height = _header_size(path, head)
    if width * height > max_pixels:
        raise ImageReadError(
            path,
            f"{width}×{height} is {width * height / 1e6:.0f} MP, over the limit of "
            f"{max_pixels / 1e6:g} MP (--max-pixels raises it)",
        )


def _sniff(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(32)


def read_image(
    path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, ImageInfo]:
    """Read an image as float32 RGB H×W×3 in [0, 1], EXIF orientation applied.

    16-bit PNG and TIFF keep their 16-bit precision. Any problem (missing, empty, truncated,
    corrupt, not an image, over `max_pixels` pixels) raises ImageReadError: "cannot read image
    FILE: CAUSE".
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if path.is_dir():
        raise ImageReadError(path, "is a folder")
    try:
        head = _sniff(path)
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from None
    if not head:
        raise ImageReadError(path, "empty file")
    try:
        _check_size(path, head, max_pixels)
        if head.startswith(_PNG_SIGNATURE) and len(head) >= 25 and head[24] == 16:
            return _read_png16(path)
        if head[:4] in _TIFF_SIGNATURES:
            result = _read_tiff(path)
            if result is not None:
                return result
        return _read_pillow(path)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image in a supported format") from None
    except Exception as exc:  # decoders raise many types on corrupt data; all are bad input
        cause = " ".join(str(exc).split()) or type(exc).__name__
        if "truncated" not in cause.lower() and isinstance(exc, EOFError):
            cause = f"truncated or corrupt ({cause})"
        raise ImageReadError(path, cause) from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) read from the file's header, nothing decoded (before EXIF rotation:
    the pixel count is the same); a file that cannot tell raises ImageReadError."""
    path = Path(path)
    try:
        head = _sniff(path)
        if not head:
            raise ImageReadError(path, "empty file")
        return _header_size(path, head)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image in a supported format") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder") from None
    except Exception as exc:  # as in read_image: any failure to parse is bad input
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ImageReadError(path, " ".join(cause.split()) or type(exc).__name__) from None


# ----------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike,
    img: np.ndarray,
    *,
    bit_depth: int = 8,
    alpha: np.ndarray | None = None,
) -> None:
    """Write an H×W×3 (or H×W) image, float [0, 1] or uint8/uint16, atomically.

    The format follows the suffix (PNG, JPEG quality 95 4:4:4, TIFF zlib, BMP, lossless WebP).
    bit_depth 16 is for PNG and TIFF only. `alpha` (H×W, [0, 1]) adds an alpha channel
    (not for JPEG); a gray image with alpha is written gray + alpha where the format holds it
    (PNG, TIFF), else RGBA. A failed write leaves nothing behind.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        known = ", ".join(IMAGE_SUFFIXES)
        raise UserError(f"cannot write image {path}: unknown suffix (use {known})")
    if bit_depth not in (8, 16):
        raise UserError(f"cannot write image {path}: bit depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and suffix not in SIXTEEN_BIT_SUFFIXES:
        raise UserError(f"cannot write image {path}: 16-bit output needs .png or .tif")
    if alpha is not None and suffix in (".jpg", ".jpeg"):
        raise UserError(f"cannot write image {path}: JPEG has no alpha channel")
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or arr.size == 0:
        raise ValueError(f"write_image: expected an H×W×3 or H×W image, got shape {arr.shape}")
    check_output_size(path, *arr.shape[:2])
    quantise = to_uint16 if bit_depth == 16 else to_uint8
    pixels = quantise(arr)
    if alpha is not None:
        a = np.asarray(alpha)
        if a.shape != arr.shape[:2]:
            raise ValueError(f"write_image: alpha shape {a.shape} != image {arr.shape[:2]}")
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]  # gray + alpha stays gray + alpha (LA)
        pixels = np.concatenate([pixels, quantise(a)[:, :, None]], axis=2)
    pixels = np.ascontiguousarray(pixels)
    try:
        with atomic_path(path) as tmp:
            _encode(tmp, pixels, suffix)
    except OSError as exc:
        raise UserError(f"cannot write image {path}: {exc.strerror or exc}") from None


def check_output_size(path: Path, height: int, width: int) -> None:
    """Refuse an image larger than its format holds (WebP: 16383 pixels a side), by name;
    callers that know the size before computing the image check it first."""
    limit = FORMAT_MAX_SIDE.get(path.suffix.lower())
    if limit is not None and max(height, width) > limit:
        raise UserError(
            f"cannot write image {path}: {width}×{height} is larger than {path.suffix} holds "
            f"({limit} pixels a side); write png or tif instead"
        )


def _encode(tmp: Path, pixels: np.ndarray, suffix: str) -> None:
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if pixels.dtype == np.uint16 and suffix == ".png":
        import png  # pypng: Pillow cannot write 16-bit RGB(A) PNG

        height, width = pixels.shape[:2]
        gray, alpha = channels in (1, 2), channels in (2, 4)
        writer = png.Writer(width, height, greyscale=gray, alpha=alpha, bitdepth=16)
        with open(tmp, "wb") as f:
            writer.write(f, pixels.reshape(height, width * channels))
        return
    if suffix in (".tif", ".tiff"):
        extra = ["unassalpha"] if channels in (2, 4) else None
        photometric = "minisblack" if channels in (1, 2) else "rgb"
        tifffile.imwrite(
            tmp, pixels, photometric=photometric, extrasamples=extra, compression="zlib"
        )
        return
    if channels == 2 and suffix != ".png":  # BMP and WebP have no gray + alpha mode
        pixels = np.concatenate([np.repeat(pixels[:, :, :1], 3, axis=2), pixels[:, :, 1:]], axis=2)
    im = Image.fromarray(pixels)
    if suffix == ".png":
        im.save(tmp, format="PNG")
    elif suffix in (".jpg", ".jpeg"):
        im.save(tmp, format="JPEG", quality=95, subsampling=0)  # 4:4:4
    elif suffix == ".bmp":
        im.save(tmp, format="BMP")
    else:
        im.save(tmp, format="WEBP", lossless=True)
