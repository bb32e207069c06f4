"""Run an exported detector in OpenVINO: the ONNX file read by `openvino.Core` (no conversion tool, so no
telemetry: see detres.deploy.telemetry), or an int8 model (NNCF's IR, or ONNX Runtime's QDQ ONNX).

Two speed knobs, neither of which changes a detection beyond float rounding:
- static shapes (deploy.static_shapes): the graph has dynamic H and W, and OpenVINO re-plans a dynamic model for
  every new input size. From the second image of one size on, a copy reshaped to that static size is compiled
  once and reused; the compiled copies of the last `static_shapes` sizes are kept. A folder of all-different sizes
  never compiles anything.
- the throughput hint (deploy.ov_hint=throughput, deploy.ov_streams): the images of one call run as parallel infer
  requests over OpenVINO's CPU streams, instead of one after the other.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict

from torch import Tensor

from detres.deploy.inputs import as_graph_input, to_detection
from detres.errors import ConfigError

COMPILE_FROM = 2  # the image of a size at which its static model is compiled (1: every size, at once)


def bf16_supported(core) -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 on this CPU (AVX-512 BF16 or AMX); elsewhere it would run f32."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoDetector:
    """`detector(images)` -> per image dict(boxes [K, 4], scores [K], labels [K]), like the eager model.

    path: .onnx or .xml; threads: inference threads (0: OpenVINO's default); device: OpenVINO device name;
    bf16: run float layers in bf16 (deploy.precision=bf16; refused on a CPU without bf16). Otherwise float32
    layers run in float32: on CPUs with bf16 OpenVINO would pick bf16 by itself and change the scores by ~1e-2
    (measured on the round-trip test model). static_shapes, hint, streams: the module docstring.
    `.compiles` counts the static models compiled (the dynamic one not included).
    """

    def __init__(self, *, path: str | os.PathLike, threads: int = 0, device: str = "CPU", bf16: bool = False,
                 static_shapes: int = 0, hint: str = "latency", streams: int = 0) -> None:
        import openvino as ov

        self.core = ov.Core()
        if bf16 and device == "CPU" and not bf16_supported(self.core):
            raise ConfigError("deploy.precision=bf16: OpenVINO runs bf16 only on CPUs with AVX-512 BF16 or AMX, and "
                              "this one has neither (it would run f32); use deploy.precision=fp32 or int8")
        self.config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": hint.upper()}
        if threads > 0:
            self.config["INFERENCE_NUM_THREADS"] = threads
        if streams > 0:
            self.config["NUM_STREAMS"] = streams
        self.device, self.throughput = device, hint == "throughput"
        self.model = self.core.read_model(str(path))
        self.compiled = self.core.compile_model(self.model, device, self.config)
        self.request = self.compiled.create_infer_request()
        self.static_shapes, self.compiles = static_shapes, 0
        self._static: OrderedDict[tuple[int, ...], tuple] = OrderedDict()  # shape -> (compiled, request)
        self._seen: Counter[tuple[int, ...]] = Counter()

    @property
    def images_per_call(self) -> int:
        """Images worth handing over in one call: OpenVINO's optimal number of parallel infer requests under the
        throughput hint, 1 under the latency hint (the images would run one after the other anyway)."""
        if not self.throughput:
            return 1
        return max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    def _for_shape(self, shape: tuple[int, ...]):
        """(compiled model, infer request) for an input of this shape: the dynamic one, or its static copy."""
        if not self.static_shapes or not self.model.is_dynamic():
            return self.compiled, self.request
        if shape in self._static:
            self._static.move_to_end(shape)
            return self._static[shape]
        self._seen[shape] += 1
        if self._seen[shape] < COMPILE_FROM:
            return self.compiled, self.request
        model = self.model.clone()
        model.reshape({0: list(shape)})
        compiled = self.core.compile_model(model, self.device, self.config)
        self.compiles += 1
        self._static[shape] = (compiled, compiled.create_infer_request())
        if len(self._static) > self.static_shapes:
            self._static.popitem(last=False)
        return self._static[shape]

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        feeds = [as_graph_input(image) for image in images]
        targets = [self._for_shape(feed.shape) for feed in feeds]
        if self.throughput and len(feeds) > 1:
            return self._parallel(feeds, targets)
        out = []
        for feed, (compiled, request) in zip(feeds, targets):
            result = request.infer({0: feed})
            out.append(to_detection(*(result[compiled.output(i)] for i in range(3))))
        return out

    def _parallel(self, feeds: list, targets: list) -> list[dict[str, Tensor]]:
        """All images at once: per compiled model, as many infer requests as OpenVINO asks for, started together
        and waited for in order (no Python callback runs on OpenVINO's threads)."""
        out: list = [None] * len(feeds)
        groups: dict[int, list[int]] = {}
        for index, (compiled, _) in enumerate(targets):
            groups.setdefault(id(compiled), []).append(index)
        for indices in groups.values():
            compiled = targets[indices[0]][0]
            width = max(1, min(len(indices), compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            requests = [compiled.create_infer_request() for _ in range(width)]
            for start in range(0, len(indices), width):
                batch = indices[start:start + width]
                for request, index in zip(requests, batch):
                    request.start_async({0: feeds[index]})
                for request, index in zip(requests, batch):
                    request.wait()
                    out[index] = to_detection(*(request.get_tensor(compiled.output(i)).data.copy() for i in range(3)))
        return out
