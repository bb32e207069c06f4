"""Request bytes -> the model's input, exactly as `detres infer` reads and prepares a file, with the limits a
server needs: the pixel limit (data.input.max_pixels) is checked on the image header before any pixel is
decoded, so a small file that declares a huge size (a decompression bomb) costs nothing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from detres.config import Config
from detres.data.image_io import TooManyPixelsError, decode_image_bytes
from detres.engine.folder_inference import model_input
from detres.errors import DataError
from detres.serve.http_errors import HTTPError


@dataclass
class Job:
    """One image for the model: `tensor` [3, H', W'] normalized, `orig_size` (H, W) of the decoded image,
    `score_thr`, and `rgb` [H, W, 3] uint8 only when tiles are cut from the original (test.tile_size > 0)."""

    tensor: torch.Tensor | None
    orig_size: tuple[int, int]
    score_thr: float
    rgb: np.ndarray | None = None


def decode_job(data: bytes, cfg: Config, score_thr: float, *, name: str = "image") -> Job:
    """The Job of one encoded image; HTTPError 400 naming the problem for an empty body, bytes that are not an
    image or a truncated JPEG, 413 for an image above the pixel limit."""
    try:
        rgb = decode_image_bytes(data, name=name, max_pixels=cfg.data.input.max_pixels)
    except TooManyPixelsError as exc:
        raise HTTPError(413, str(exc)) from None
    except DataError as exc:
        raise HTTPError(400, str(exc)) from None
    size = (int(rgb.shape[0]), int(rgb.shape[1]))
    if cfg.test.tile_size > 0:  # tiles are cut from the original image by the detector's tiling
        return Job(tensor=None, orig_size=size, score_thr=score_thr, rgb=rgb)
    return Job(tensor=model_input(rgb, cfg), orig_size=size, score_thr=score_thr)


def parse_score_thr(value: str | float | None, default: float) -> float:
    """The `score_thr` of a request (same meaning as `detres infer --score-thr`); 400 for a non-number."""
    if value is None:
        return default
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise HTTPError(400, f"score_thr={value!r} is not a number; give e.g. ?score_thr=0.3") from None
    if not np.isfinite(score):
        raise HTTPError(400, f"score_thr={value!r} is not a finite number; give e.g. ?score_thr=0.3")
    return score
