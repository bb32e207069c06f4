"""Run an exported detector in OpenVINO: the ONNX file read by `openvino.Core` (no conversion tool, so no
telemetry: see detres.deploy.telemetry), or the int8 IR that NNCF wrote."""

from __future__ import annotations

import os

from torch import Tensor

from detres.deploy.inputs import as_graph_input, to_detection


class OpenVinoDetector:
    """`detector(images)` -> per image dict(boxes [K, 4], scores [K], labels [K]), like the eager model.

    path: .onnx or .xml; threads: inference threads (0: OpenVINO's default); device: OpenVINO device name.
    Float32 layers run in float32: on CPUs with bf16 OpenVINO would otherwise pick bf16 and change the scores
    by ~1e-2 (measured on the round-trip test model).
    """

    def __init__(self, *, path: str | os.PathLike, threads: int = 0, device: str = "CPU") -> None:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(core.read_model(str(path)), device, config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        out = []
        for image in images:
            result = self.request.infer({0: as_graph_input(image)})
            out.append(to_detection(*(result[self.compiled.output(i)] for i in range(3))))
        return out
