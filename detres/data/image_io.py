"""The one image reader of detres: any file (or encoded image in memory) becomes 8-bit RGB [H, W, 3], or a
DataError naming the file.

OpenCV decodes; Pillow (a torchvision dependency) reads the header first, so a file claiming a huge size is
refused before any pixel is decoded, and supplies the EXIF orientation, which OpenCV ignores when it is asked
for the file's own channels (IMREAD_UNCHANGED) — needed to see 16-bit and alpha data as they are.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from detres.errors import DataError

log = logging.getLogger("detres.data")
DEFAULT_MAX_PIXELS = 100_000_000
PILLOW_MODES = {"CMYK", "P", "PA", "LA", "1"}  # decoded by Pillow: OpenCV gets their colours wrong or fails

# EXIF orientation tag value -> operations that bring the stored pixels upright
_EXIF_FIX = {
    2: [cv2.flip, 1], 3: [cv2.rotate, cv2.ROTATE_180], 4: [cv2.flip, 0],
    5: "transpose", 6: [cv2.rotate, cv2.ROTATE_90_CLOCKWISE], 7: "transverse",
    8: [cv2.rotate, cv2.ROTATE_90_COUNTERCLOCKWISE],
}


class TooManyPixelsError(DataError):
    """An image whose size exceeds the pixel limit (a server answers it differently from a corrupt file)."""


def _header(path: Path | io.BytesIO, max_pixels: int, name: str | None = None) -> tuple[int, int, int, str]:
    """(width, height, EXIF orientation, mode) from the header of a file or an in-memory image, without decoding
    the pixels; `name` names the image in errors (default: the path)."""
    name = str(path) if name is None else name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    return img.width, img.height, 1, img.mode  # refused by the caller, nothing decoded
                return img.width, img.height, _orientation(img), img.mode
        except Image.DecompressionBombError:
            raise TooManyPixelsError(f"{name}: the header claims a decompression-bomb size; refused (pixel limit "
                            f"{max_pixels}, data.input.max_pixels)") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return 0, 0, 1, ""  # Pillow cannot read it: let OpenCV try (and report the failure if it fails too)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright) without decoding pixels.

    Pillow's getexif() on a PNG loads the whole image to look for an eXIf chunk after the pixel data; only a chunk
    before them (already in `img.info`) is read here, so a PNG is decoded once, by OpenCV.
    """
    if img.format == "PNG":
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = img.getexif()
    return int(exif.get(0x0112, 1) or 1)


def _apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    fix = _EXIF_FIX.get(orientation)
    if fix is None:
        return image
    if fix == "transpose":
        return np.ascontiguousarray(image.transpose(1, 0, 2))
    if fix == "transverse":
        return np.ascontiguousarray(image[::-1, ::-1].transpose(1, 0, 2))
    return fix[0](image, fix[1])


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    """Decoded OpenCV array (gray / BGR / BGRA, 8 or 16 bit, or float) -> uint8 RGB."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # keep the 8 most significant bits
    elif image.dtype != np.uint8:
        image = np.clip(image.astype(np.float32) * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:  # alpha is dropped: detection looks at the colour channels only
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_with_pillow(path: Path | io.BytesIO) -> np.ndarray | None:
    """CMYK and palette images, which OpenCV may decode with wrong colours, through Pillow's converters."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _is_truncated_jpeg(data: np.ndarray) -> bool:
    """A JPEG (starts with FFD8) must end with the EOI marker FFD9; OpenCV silently decodes a cut file as gray."""
    if data.size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    tail = np.trim_zeros(data[-64:], "b")  # some writers pad after EOI
    return not (tail.size >= 2 and tail[-2] == 0xFF and tail[-1] == 0xD9)


def sync_opencv_log_level() -> None:
    """OpenCV's own console messages follow detres's logging: silent by default, its warnings shown when the
    `detres.data` logger is at DEBUG. OpenCV writes to stderr from C++ with no Python hook, so its level is all
    that can be routed; without this, a GeoTIFF's unknown tags print `[ WARN:0] ... TIFF_Warning` lines that a
    user takes for a detres error. Cheap: one C call, made only when the wanted level changes."""
    wanted = cv2.utils.logging.LOG_LEVEL_WARNING if log.isEnabledFor(logging.DEBUG) else \
        cv2.utils.logging.LOG_LEVEL_SILENT
    if cv2.utils.logging.getLogLevel() != wanted:
        cv2.utils.logging.setLogLevel(wanted)


def read_image_rgb(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any image file as uint8 RGB [H, W, 3], upright per EXIF; DataError for unreadable or too large."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); remove it or replace it with the real image")
    header = _header(path, max_pixels)
    return _decode(header, lambda: np.fromfile(str(path), dtype=np.uint8), lambda: _decode_with_pillow(path),
                   str(path), max_pixels)


def decode_image_bytes(data: bytes, *, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`read_image_rgb` for an encoded image held in memory (an upload): the same header check before any pixel
    is decoded, the same decoders and colour handling; `name` names the image in the DataError."""
    if not data:
        raise DataError(f"{name}: empty (0 bytes); send the image file's bytes")
    header = _header(io.BytesIO(data), max_pixels, name)
    return _decode(header, lambda: np.frombuffer(data, dtype=np.uint8), lambda: _decode_with_pillow(io.BytesIO(data)),
                   name, max_pixels)


def _decode(header: tuple[int, int, int, str], raw, pillow, name: str, max_pixels: int) -> np.ndarray:
    """The decoding shared by files and memory, once the header is read: the pixel limit on the header's size,
    Pillow for the modes OpenCV gets wrong, else OpenCV on the raw bytes (`raw()`), upright per EXIF."""
    width, height, orientation, mode = header
    if width * height > max_pixels:
        raise TooManyPixelsError(f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of "
                                 f"{max_pixels} (data.input.max_pixels); raise the limit if the file is trusted")
    if mode in PILLOW_MODES:
        rgb = pillow()
        if rgb is not None:
            return _apply_orientation(np.ascontiguousarray(rgb), orientation)
    data = raw()
    if _is_truncated_jpeg(data):
        raise DataError(f"{name}: truncated JPEG (no end-of-image marker); the file was cut short, re-copy it")
    sync_opencv_log_level()
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        raise DataError(f"{name}: not a readable image (corrupt, truncated, or not an image format)")
    if width == 0 and image.shape[0] * image.shape[1] > max_pixels:
        raise TooManyPixelsError(f"{name}: {image.shape[1]}x{image.shape[0]} pixels exceeds the limit of {max_pixels}")
    return _apply_orientation(_to_rgb8(image), orientation)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image as read_image_rgb returns it (upright per EXIF), from the header only;
    DataError when the header is unreadable."""
    width, height, orientation, _ = _header(Path(path), max_pixels=2**62)
    if width == 0:
        height, width = read_image_rgb(path).shape[:2]  # a format Pillow cannot parse: decode it
        return width, height
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)  # these turn the image by 90
