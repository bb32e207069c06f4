"""ONNX translations for torchvision ops that torch.onnx's own library gets wrong.

onnxscript 0.7's `torchvision::roi_pool` translation takes the op's arguments in another order than
torchvision's schema (input, rois, spatial_scale, pooled_height, pooled_width) and fails; this one maps it to
ONNX MaxRoiPool, which computes torchvision's roi_pool (Caffe's quantized bins), tested in test_deploy_roundtrip.
"""

from __future__ import annotations

import onnxscript
import torch
from onnxscript import opset18 as op


def roi_pool(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int):  # noqa: A002
    """torchvision::roi_pool -> (pooled, argmax); the argmax (training only) is not computed, a zero stands in."""
    pooled = op.MaxRoiPool(input, rois, pooled_shape=[pooled_height, pooled_width], spatial_scale=spatial_scale)
    return pooled, op.Cast(op.Mul(pooled, op.Constant(value_float=0.0)), to=onnxscript.INT64.dtype)


CUSTOM_TRANSLATIONS = {torch.ops.torchvision.roi_pool.default: roi_pool}
