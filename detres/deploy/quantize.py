"""int8 post-training static quantization of an exported detector, by one of two tools (deploy.int8_quantizer):

- `nncf`: NNCF on the OpenVINO model read from the ONNX file (MIXED preset) -> model_int8.xml/.bin, which OpenVINO
  runs with its VNNI int8 kernels;
- `onnxruntime`: ONNX Runtime's `quantize_static` in QDQ format (uint8 activations, int8 per-channel weights,
  MinMax calibration) -> model_int8.onnx, which ONNX Runtime and OpenVINO both run.

ONNX Runtime puts int8 only at the inputs of convolutions and matrix products (INT8_OPS). NNCF as is also
quantizes the inputs of residual adds, pooling and (in a GroupNorm model) the normalization, which OpenVINO fuses
into faster kernels; `int8_ops_only` restricts it to ONNX Runtime's placement (and `minmax_ranges` takes its
activation ranges). NMS, TopK and the box arithmetic stay float32 in both. How each tool is run (which layers stay
float, accuracy control) is a recipe (detres.deploy.int8_recipes), passed in as `QuantizeOptions`. A new quantizer
is one function and one line in QUANTIZERS.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from detres.data.records import ClassMap, DetRecord
from detres.deploy.inputs import as_graph_input, to_detection
from detres.deploy.telemetry import disable_telemetry
from detres.errors import ConfigError, UserError

INT8_OPS = ["Conv", "MatMul", "Gemm"]  # the ONNX ops whose inputs ONNX Runtime's model quantizes
# the same ops as OpenVINO names them (an ONNX Gemm becomes a MatMul), and the nodes NNCF never quantizes anyway
OV_INT8_OPS = {"Convolution", "GroupConvolution", "MatMul"}
OV_NOT_QUANTIZED = {"Parameter", "Constant", "Result", "Convert"}
ORT_CALIB_CHUNK = 4  # calibration images whose tensors ONNX Runtime holds before merging their ranges


@dataclass(frozen=True)
class Quantizer:
    """An int8 tool: the file it writes, the runtime that measures it at export, its settings, and how it runs."""

    artifact: str
    runtime: str  # the RUNTIMES name that runs (and measures) its model
    settings: dict[str, Any]
    run: Callable[[Path, Sequence[Tensor], Path, QuantizeOptions], None]  # (onnx, images, staged artifact, options)


@dataclass(frozen=True)
class QuantizeOptions:
    """How a quantizer runs, beyond its fixed settings (a recipe of detres.deploy.int8_recipes fills it in).

    float_layers: ONNX node names that stay float (NNCF's ignored scope, ONNX Runtime's nodes_to_exclude);
    int8_ops_only: NNCF quantizes only the inputs of INT8_OPS, as ONNX Runtime does;
    minmax_ranges: NNCF's activation ranges are the calibration images' min and max (ONNX Runtime's MinMax), not
    its default mean over the images of each one's min and max;
    metric: with accuracy control (NNCF only), a detector's score on the validation_images of the given indices
    (higher is better); max_drop: what it may lose against fp32; max_iterations: layer groups reverted at most.
    """

    float_layers: tuple[str, ...] = ()
    int8_ops_only: bool = False
    minmax_ranges: bool = False
    metric: Callable[[Callable, Sequence[int]], float] | None = None
    max_drop: float = 0.0
    max_iterations: int = 0
    ranking_images: int = 0
    validation_images: tuple[Tensor, ...] = ()


def _compiled_detector(compiled) -> Callable[[list[Tensor]], list[dict[str, Tensor]]]:
    """An OpenVINO compiled model (as NNCF's accuracy control hands it over) as a detector(images) callable."""
    request = compiled.create_infer_request()

    def detect(images: list[Tensor]) -> list[dict[str, Tensor]]:
        results = [request.infer({0: as_graph_input(image)}) for image in images]
        return [to_detection(*(result[compiled.output(i)] for i in range(3))) for result in results]
    return detect


def _nncf(onnx_path: Path, calibration: Sequence[Tensor], staged: Path, options: QuantizeOptions) -> None:
    disable_telemetry()
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    dataset = nncf.Dataset(list(range(len(calibration))), lambda index: as_graph_input(calibration[index]))
    # OpenVINO names a Conv "<onnx name>/WithoutBiases" and its bias "<onnx name>"; validate: each must match
    patterns = [f"^{re.escape(name)}(/.*)?$" for name in options.float_layers]
    ignored = nncf.IgnoredScope(patterns=patterns, types=_types_left_float(model) if options.int8_ops_only else [])
    advanced = nncf.AdvancedQuantizationParameters()
    if options.minmax_ranges:
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        advanced.activations_range_estimator_params = RangeEstimatorParametersSet.MINMAX
    common = dict(subset_size=len(calibration), preset=nncf.QuantizationPreset.MIXED, ignored_scope=ignored)
    if options.metric is None:
        quantized = nncf.quantize(model, dataset, advanced_parameters=advanced, **common)
    else:
        metric = options.metric

        def validate(compiled, indices) -> float:  # NNCF also calls it on one image at a time to rank layers
            return metric(_compiled_detector(compiled), list(indices))

        restorer = nncf.AdvancedAccuracyRestorerParameters(max_num_iterations=options.max_iterations,
                                                           ranking_subset_size=options.ranking_images)
        images = options.validation_images
        validation = nncf.Dataset(list(range(len(images))), lambda index: as_graph_input(images[index]))
        quantized = nncf.quantize_with_accuracy_control(
            model, dataset, validation, validate, max_drop=options.max_drop, drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced, advanced_accuracy_restorer_parameters=restorer, **common)
    ov.save_model(quantized, str(staged), compress_to_fp16=False)


def _types_left_float(model) -> list[str]:
    """Every OpenVINO op type in `model` whose inputs NNCF would otherwise quantize, except OV_INT8_OPS: NNCF's
    ignored scope by type, which leaves int8 only at convolution and matrix-product inputs."""
    present = {op.get_type_name() for op in model.get_ops()}
    return sorted(present - OV_INT8_OPS - OV_NOT_QUANTIZED)


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over the calibration images (get_next, then None),
    with the `len` and `set_range` that its strided calibration (CalibStridedMinMax) walks the images by."""

    def __init__(self, images: Sequence[Tensor]) -> None:
        self._images = images
        self.set_range(0, len(images))

    def __len__(self) -> int:
        return len(self._images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._feeds = iter([{"image": as_graph_input(image)} for image in self._images[start_index:end_index]])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def _stride(count: int) -> int:
    """The largest number of images, at most ORT_CALIB_CHUNK, that divides `count` (ONNX Runtime requires it)."""
    return next(size for size in range(min(ORT_CALIB_CHUNK, count), 0, -1) if count % size == 0)


def _onnxruntime(onnx_path: Path, calibration: Sequence[Tensor], staged: Path, options: QuantizeOptions) -> None:
    if options.metric is not None:
        raise ConfigError("accuracy control is NNCF's (nncf.quantize_with_accuracy_control); ONNX Runtime has none")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # ONNX Runtime keeps every intermediate tensor of every calibration image until it computes the ranges: for a
    # full-width R-50 at 400 px that is hundreds of MB per image. Its strided calibration computes and merges the
    # min/max every few images, which is exact for MinMax and bounds the memory. (CalibMaxIntermediateOutputs, the
    # other knob, drops the collected tensors without computing them in onnxruntime 1.31.)
    quantize_static(str(onnx_path), str(staged), _Reader(calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=INT8_OPS, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=list(options.float_layers),
                    extra_options={"CalibStridedMinMax": _stride(len(calibration))})


QUANTIZERS: dict[str, Quantizer] = {
    "nncf": Quantizer(artifact="model_int8.xml", runtime="openvino", run=_nncf,
                      settings={"tool": "nncf.quantize", "preset": "MIXED", "model": "OpenVINO IR read from the ONNX"}),
    "onnxruntime": Quantizer(artifact="model_int8.onnx", runtime="onnxruntime", run=_onnxruntime,
                             settings={"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                                       "activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True,
                                       "calibrate_method": "MinMax", "op_types": INT8_OPS,
                                       "calib_strided_min_max": f"at most {ORT_CALIB_CHUNK} images"}),
}
AUTO = "nncf"  # kept the bound on the demo model (docs/deploy.md); onnxruntime's model is measured beside it


def resolve_quantizer(name: str, backend: str = "") -> str:
    """deploy.int8_quantizer -> a QUANTIZERS name; `auto` follows test.backend=onnxruntime (it cannot read NNCF's
    IR), else AUTO. ConfigError naming the option for anything else."""
    if name == "auto":
        return "onnxruntime" if backend == "onnxruntime" else AUTO
    if name not in QUANTIZERS:
        raise ConfigError(f"deploy.int8_quantizer={name!r}: expected auto or one of {', '.join(QUANTIZERS)}")
    return name


def quantize_into(onnx_path: Path, calibration: Sequence[Tensor], folder: Path, quantizer: str,
                  options: QuantizeOptions = QuantizeOptions()) -> Path:
    """Calibrate on `calibration` ([3, H, W] normalized images, at least one: export_detector checks) and write the
    quantizer's int8 model into `folder` (a staging folder: `install` moves the chosen one into the export)."""
    tool = QUANTIZERS[quantizer]
    target = folder / tool.artifact
    tool.run(onnx_path, calibration, target, options)
    return target


def install(staged: Path, out_dir: Path) -> Path:
    """Move a staged int8 model (and the files beside it) into out_dir, the file the json names last."""
    os.chmod(staged.parent, 0o755)
    for part in sorted(staged.parent.iterdir(), key=lambda p: p == staged):
        if part.suffix in (".bin", ".onnx", ".xml", ".data"):
            part.chmod(0o644)
            os.replace(part, out_dir / part.name)
    return out_dir / staged.name


def staging_folder(out_dir: Path) -> tempfile.TemporaryDirectory:
    """A temporary folder inside the export folder for one int8 attempt (removed with whatever was not installed)."""
    return tempfile.TemporaryDirectory(dir=out_dir, prefix=".int8.")


@dataclass
class CalibrationTruth:
    """Ground truth of a set of images (calibration or measurement), to measure fp32 and int8 mAP at export: the
    records, and per image the resize factor (resized / original, as (sy, sx)) and the original (height, width)."""

    records: list[DetRecord]
    scales: list[tuple[float, float]]
    class_map: ClassMap


def _picks(dataset, count: int) -> list[int]:
    if count < 1:
        raise UserError(f"--calib {count}: need at least 1 calibration image")
    step = max(1, len(dataset) // count)
    return list(range(0, len(dataset), step)[:count])


def calibration_set(dataset, count: int) -> tuple[list[Tensor], CalibrationTruth | None]:
    """`count` images of a detection dataset built with test-time resizing, evenly spread over it, and their
    ground truth (None when the dataset has no box at all: nothing to measure)."""
    images, records, scales = [], [], []
    for i in _picks(dataset, count):
        image, _, meta = dataset[i]
        images.append(image)
        records.append(dataset.records[i])
        scales.append(tuple(meta["scale"]))
    if not any(len(rec.boxes) for rec in records):
        return images, None
    return images, CalibrationTruth(records=records, scales=scales, class_map=dataset.class_map)
