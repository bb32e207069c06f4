"""Run an exported detector in ONNX Runtime (CPU, or CUDA when its provider is installed and asked for)."""

from __future__ import annotations

import os

from torch import Tensor

from detres.deploy.inputs import as_graph_input, to_detection


class OnnxRuntimeDetector:
    """`detector(images)` -> per image dict(boxes [K, 4], scores [K], labels [K]), like the eager model.

    path: the .onnx file; threads: intra-op threads (0: ONNX Runtime's default); providers: execution providers
    in order of preference (default CPU).
    """

    def __init__(self, *, path: str | os.PathLike, threads: int = 0, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's concern
        # idle intra-op threads sleep instead of spinning: a spinning pool takes the cores from what shares the
        # process between two images (the reader workers of tools/infer.py, another runtime in tools/bench.py)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return [to_detection(*self.session.run(None, {"image": as_graph_input(image)})) for image in images]
