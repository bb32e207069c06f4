"""Open an export folder in a runtime: the checked json plus a callable with the eager model's interface.

`RUNTIMES` is the list of runtimes that run an exported graph: a new one (TensorRT, say) is one file with its
detector class and one line here; test.backend, tools/bench.py and tools/time_export.py take their names from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from detres.deploy.artifact import ExportInfo, read_export_info
from detres.errors import ConfigError, UserError

PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Runtime:
    """A runtime of the exported graph: the deploy.precision values it runs, and how it opens a folder."""

    precisions: tuple[str, ...]
    open: Callable[[ExportInfo, str, int], Callable]  # (info, precision, threads) -> detector(images)


def _onnxruntime(info: ExportInfo, precision: str, threads: int):
    from detres.deploy.runtime_onnx import OnnxRuntimeDetector

    return OnnxRuntimeDetector(path=info.artifact, threads=threads)


def _openvino(info: ExportInfo, precision: str, threads: int):
    from detres.deploy.runtime_openvino import OpenVinoDetector

    if precision == "int8":
        if info.int8_artifact is None or not info.int8_artifact.is_file():
            raise UserError(f"{info.folder} holds no int8 model; export with tools/export.py --int8 --calib N")
        return OpenVinoDetector(path=info.int8_artifact, threads=threads)
    return OpenVinoDetector(path=info.artifact, threads=threads)


RUNTIMES: dict[str, Runtime] = {
    "onnxruntime": Runtime(precisions=("fp32",), open=_onnxruntime),
    "openvino": Runtime(precisions=("fp32", "int8"), open=_openvino),
}
BACKENDS = ("torch", *RUNTIMES)  # test.backend: torch runs checkpoints eagerly, the others an export folder


def check_runtime(backend: str, precision: str) -> Runtime:
    """The runtime of test.backend, checked against deploy.precision; ConfigError naming the option and the fix."""
    if backend not in BACKENDS:
        raise ConfigError(f"test.backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"deploy.precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if backend == "torch":
        raise ConfigError("test.backend=torch runs checkpoints (--ckpt), not an export folder; set "
                          f"test.backend to one of {', '.join(RUNTIMES)} for --model")
    runtime = RUNTIMES[backend]
    if precision not in runtime.precisions:
        able = [name for name, r in RUNTIMES.items() if precision in r.precisions]
        raise ConfigError(f"deploy.precision={precision} is not run by test.backend={backend} (it runs "
                          f"{', '.join(runtime.precisions)}); set test.backend={able[0]}")
    return runtime


def open_exported(folder: str | os.PathLike, *, backend: str, precision: str = "fp32", threads: int = 0):
    """(detector, info): detector(images) -> per image dict(boxes, scores, labels). backend: test.backend;
    precision: deploy.precision (int8 runs the NNCF model, OpenVINO only); threads: deploy.threads."""
    runtime = check_runtime(backend, precision)
    info = read_export_info(folder)
    return runtime.open(info, precision, threads), info
