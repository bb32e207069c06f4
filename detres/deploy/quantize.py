"""int8 post-training static quantization of an exported detector: NNCF on the OpenVINO model.

NNCF was chosen over ONNX Runtime's quantize_static because OpenVINO's CPU plugin runs its int8 convolutions with
VNNI kernels and NNCF places the quantizers for that plugin (docs/deploy.md has the mAP of both sides). Only
convolutions and matrix products become int8; NMS, TopK and the box arithmetic stay float32.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from detres.deploy.artifact import INT8_FILE
from detres.deploy.inputs import as_graph_input
from detres.deploy.telemetry import disable_telemetry
from detres.errors import UserError


def quantize_openvino(onnx_path: Path, calibration: Sequence[Tensor], out_dir: Path) -> Path:
    """Calibrate on `calibration` ([3, H, W] normalized images, at least one: export_detector checks) and write
    model_int8.xml/.bin into out_dir."""
    disable_telemetry()
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    dataset = nncf.Dataset([as_graph_input(image) for image in calibration])
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration), preset=nncf.QuantizationPreset.MIXED)
    target = out_dir / INT8_FILE
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".int8.") as tmp:
        staged = Path(tmp) / INT8_FILE
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        os.chmod(tmp, 0o755)
        os.replace(staged.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(staged, target)
    return target


def calibration_images(dataset, count: int) -> list[Tensor]:
    """The first `count` images of a detection dataset built with test-time resizing (evenly spread over it)."""
    if count < 1:
        raise UserError(f"--calib {count}: need at least 1 calibration image")
    step = max(1, len(dataset) // count)
    return [dataset[i][0] for i in range(0, len(dataset), step)[:count]]
