"""What every runtime checks about an input image before it reaches the exported graph."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from detres.errors import UserError

# The image sides the exported graph accepts: from 32, since it assumes a conv4_x map of at least 2x2 (torch.export
# specializes a size-1 dimension), to 8192.
MIN_SIDE, MAX_SIDE = 32, 8192


def as_graph_input(image: Tensor | np.ndarray) -> np.ndarray:
    """[3, H, W] float32 normalized RGB (tensor or array) -> [1, 3, H, W] contiguous float32 array.

    UserError naming the expectation for another channel count, rank or dtype (the graph would otherwise fail
    deep inside the runtime with a shape or type message that names no input).
    """
    if isinstance(image, Tensor):
        dtype = str(image.dtype).replace("torch.", "")
        array = image.detach().cpu()
    elif isinstance(image, np.ndarray):
        dtype, array = str(image.dtype), image
    else:
        raise UserError(f"an exported detector takes a [3, H, W] float32 tensor, got {type(image).__name__}")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise UserError(f"an exported detector takes one [3, H, W] image (batch 1), got shape {tuple(array.shape)}")
    if array.shape[0] != 3:
        raise UserError(f"an exported detector takes 3 channels (RGB, channel first: [3, H, W]), got "
                        f"{array.shape[0]} in shape {tuple(array.shape)}")
    if min(array.shape[1:]) < MIN_SIDE or max(array.shape[1:]) > MAX_SIDE:
        raise UserError(f"an exported detector takes image sides from {MIN_SIDE} to {MAX_SIDE} pixels, got "
                        f"{tuple(array.shape[1:])}; resize with detres.data.transforms.prepare_image")
    if dtype != "float32":
        raise UserError(f"an exported detector takes float32 input normalized with the json's pixel_mean/std, got "
                        f"{dtype}; use detres.data.transforms.prepare_image")
    if isinstance(array, Tensor):
        array = array.numpy()
    return np.ascontiguousarray(array[None])


def to_detection(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> dict[str, Tensor]:
    """The eager model's output dict from the graph's three outputs."""
    return {"boxes": torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "scores": torch.from_numpy(np.asarray(scores, dtype=np.float32).reshape(-1)),
            "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1))}
