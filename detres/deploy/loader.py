"""Open an export folder in a runtime: the checked json plus a callable with the eager model's interface."""

from __future__ import annotations

import os

from detres.deploy.artifact import ExportInfo, read_export_info
from detres.errors import ConfigError, UserError

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")


def open_exported(folder: str | os.PathLike, *, backend: str, precision: str = "fp32", threads: int = 0):
    """(detector, info): detector(images) -> per image dict(boxes, scores, labels). backend: test.backend;
    precision: deploy.precision (int8 runs the NNCF model, OpenVINO only)."""
    if backend not in BACKENDS:
        raise ConfigError(f"test.backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"deploy.precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    info = read_export_info(folder)
    if precision == "int8":
        if backend != "openvino":
            raise ConfigError(f"deploy.precision=int8 runs the NNCF model in OpenVINO; set test.backend=openvino "
                              f"(got {backend})")
        if info.int8_artifact is None or not info.int8_artifact.is_file():
            raise UserError(f"{info.folder} holds no int8 model; export with tools/export.py --int8 --calib N")
        from detres.deploy.runtime_openvino import OpenVinoDetector

        return OpenVinoDetector(path=info.int8_artifact, threads=threads), info
    if backend == "torch":
        if info.format != "torch-export":
            raise ConfigError(f"{info.folder} holds an {info.format} model; test.backend=torch runs a torch-export "
                              "(.pt2) folder; set test.backend=onnxruntime or openvino")
        return _program(info), info
    if info.format != "onnx":
        raise ConfigError(f"{info.folder} holds a {info.format} model; test.backend={backend} runs an onnx folder "
                          "(tools/export.py --format onnx), or set test.backend=torch")
    if backend == "onnxruntime":
        from detres.deploy.runtime_onnx import OnnxRuntimeDetector

        return OnnxRuntimeDetector(path=info.artifact, threads=threads), info
    from detres.deploy.runtime_openvino import OpenVinoDetector

    return OpenVinoDetector(path=info.artifact, threads=threads), info


def _program(info: ExportInfo):
    import torch
    import torchvision  # noqa: F401  (registers the torchvision ops the program calls)

    from detres.deploy.inputs import as_graph_input, to_detection

    module = torch.export.load(str(info.artifact)).module()

    def detect(images):
        with torch.no_grad():
            outs = [module(torch.from_numpy(as_graph_input(image))) for image in images]
        return [to_detection(*(t.numpy() for t in out)) for out in outs]

    return detect
