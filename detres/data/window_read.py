"""A window of a large training image (data.train_crop), reading no more of the file than the format allows.

- TIFF (tiled or in strips, 8/16-bit gray or RGB, upright): only the tiles or strips the window touches are read and
  decoded, with `tifffile`; an uncompressed TIFF is memory-mapped. The image is never whole in memory, so
  data.input.max_pixels (a guard against decoding bombs) applies to the window. tifffile decodes zlib/deflate,
  packbits, zstd and lzma by itself; LZW (what OpenCV writes) and JPEG tiles need the `imagecodecs` package, and
  without it such a TIFF takes the path below. Alpha, palette, YCbCr and rotated TIFFs take it too.
- Any other file (JPEG, PNG: OpenCV decodes them only whole) is decoded once by `read_image_rgb` and kept in a
  per-process LRU cache of data.train_crop_cache_mb megabytes, so the next windows of the same image cost a slice.
  Memory: each loader worker (data.num_workers) holds its own cache, up to W x H x 3 bytes per image (a 10,000 px
  square orthophoto is 300 MB), so the loaders together hold up to (workers + 1) x train_crop_cache_mb. An image
  larger than the whole budget is decoded for each of its windows.
Pixels equal `read_image_rgb(path)[y0:y0+h, x0:x0+w]` either way (tests/test_train_crop.py).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import tifffile

from detres.data.image_io import read_image_rgb
from detres.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")


class WindowReader:
    """Windows (x0, y0, w, h) of images, as uint8 RGB [h, w, 3]; one per process (not shared across workers)."""

    def __init__(self, *, cache_mb: int, max_pixels: int) -> None:
        self.budget = cache_mb * 2**20
        self.max_pixels = max_pixels
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cached_bytes = 0
        self.tiff_reads = 0  # windows read from TIFF segments (tests and logs: which path served the windows)

    def read(self, path: str | os.PathLike, window: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
        """The window of the image at `path`, whose annotation says it is `size` = (width, height) pixels;
        DataError when the file's size differs or it is unreadable."""
        path = str(path)
        if Path(path).suffix.lower() in TIFF_SUFFIXES:
            pixels = _tiff_window(path, window, size, self.max_pixels)
            if pixels is not None:
                self.tiff_reads += 1
                return pixels
        image = self._decoded(path)
        if image.shape[:2] != (size[1], size[0]):
            raise DataError(f"{path}: image is {image.shape[1]}x{image.shape[0]} but its annotation says "
                            f"{size[0]}x{size[1]}")
        x0, y0, w, h = window
        return np.ascontiguousarray(image[y0:y0 + h, x0:x0 + w])

    def _decoded(self, path: str) -> np.ndarray:
        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        image = read_image_rgb(path, max_pixels=self.max_pixels)
        if image.nbytes <= self.budget:
            while self.cache and self.cached_bytes + image.nbytes > self.budget:
                _, old = self.cache.popitem(last=False)
                self.cached_bytes -= old.nbytes
            self.cache[path] = image
            self.cached_bytes += image.nbytes
        return image


def _tiff_window(path: str, window: tuple[int, int, int, int], size: tuple[int, int],
                 max_pixels: int) -> np.ndarray | None:
    """The window from the TIFF's own tiles or strips; None when the layout is one read_image_rgb must handle
    (orientation tag, palette, YCbCr, separate planes, odd bit depths, several pages of different sizes)."""
    x0, y0, w, h = window
    if w * h > max_pixels:
        raise DataError(f"{path}: a {w}x{h} window exceeds the pixel limit {max_pixels} (data.input.max_pixels)")
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if not _plain_layout(page):
                return None
            if (page.imagewidth, page.imagelength) != size:
                raise DataError(f"{path}: image is {page.imagewidth}x{page.imagelength} but its annotation says "
                                f"{size[0]}x{size[1]}")
            if page.is_memmappable:
                pixels = tifffile.memmap(path, page=0, mode="r")
                pixels = pixels.reshape(page.imagelength, page.imagewidth, -1)[y0:y0 + h, x0:x0 + w]
                return _to_rgb8(np.array(pixels))
            return _to_rgb8(_read_segments(tif, page, window))
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError):
        return None  # let the general reader decode it, or report it


def _plain_layout(page: tifffile.TiffPage) -> bool:
    orientation = page.tags.get(274)
    samples = page.samplesperpixel
    return ((orientation is None or orientation.value == 1)
            and int(page.photometric) in (1, 2)  # MINISBLACK, RGB
            and (samples == 1 or int(page.planarconfig) == 1)  # interleaved samples
            and samples in (1, 3) and page.dtype in (np.uint8, np.uint16)
            and getattr(page, "imagedepth", 1) == 1)


def _read_segments(tif: tifffile.TiffFile, page: tifffile.TiffPage, window: tuple[int, int, int, int]) -> np.ndarray:
    """Decode only the tiles (or strips) that the window touches and paste them into [h, w, samples]."""
    x0, y0, w, h = window
    if page.is_tiled:
        seg_h, seg_w = page.tilelength, page.tilewidth
    else:
        seg_h, seg_w = min(page.rowsperstrip, page.imagelength), page.imagewidth
    across = math.ceil(page.imagewidth / seg_w)
    indices = [r * across + c for r in range(y0 // seg_h, (y0 + h - 1) // seg_h + 1)
               for c in range(x0 // seg_w, (x0 + w - 1) // seg_w + 1)]
    out = np.zeros((h, w, page.samplesperpixel), page.dtype)
    offsets = [page.dataoffsets[i] for i in indices]
    counts = [page.databytecounts[i] for i in indices]
    for data, index in tif.filehandle.read_segments(offsets, counts, indices=indices, sort=True):
        segment, (_, _, top, left, _), _ = page.decode(data, index, jpegtables=page.jpegtables, _fullsize=True)
        segment = segment.reshape(segment.shape[-3:])  # [seg_h, seg_w, samples]
        ya, yb = max(top, y0), min(top + seg_h, y0 + h)
        xa, xb = max(left, x0), min(left + seg_w, x0 + w)
        out[ya - y0:yb - y0, xa - x0:xb - x0] = segment[ya - top:yb - top, xa - left:xb - left]
    return out


def _to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """[h, w, 1|3] uint8/uint16 gray or RGB -> uint8 RGB, as read_image_rgb converts (16 bit: the top 8)."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    return np.ascontiguousarray(pixels)
