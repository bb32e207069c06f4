"""Open an export folder in a runtime: the checked json plus a callable with the eager model's interface.

`RUNTIMES` is the list of runtimes that run an exported graph: a new one (TensorRT, say) is one file with its
detector class and one line here; test.backend, tools/bench.py and tools/time_export.py take their names from it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from detres.config import DeployConfig
from detres.deploy.artifact import ExportInfo, read_export_info
from detres.deploy.int8_accuracy import BOUND, kept_bound
from detres.errors import ConfigError, UserError

log = logging.getLogger("detres.deploy")
PRECISIONS = ("auto", "fp32", "int8", "bf16")
OV_HINTS = ("latency", "throughput")


@dataclass(frozen=True)
class Runtime:
    """A runtime of the exported graph: the deploy.precision values it runs, and how it opens a folder."""

    precisions: tuple[str, ...]
    open: Callable[[ExportInfo, DeployConfig], Callable]  # (info, deploy settings) -> detector(images)


def _int8_model(info: ExportInfo, runtime: str) -> Path:
    if info.int8_artifact is None or not info.int8_artifact.is_file():
        raise UserError(f"{info.folder} holds no int8 model; export with tools/export.py --int8 --calib N")
    if runtime == "onnxruntime" and info.int8_artifact.suffix != ".onnx":
        raise UserError(f"{info.folder}'s int8 model was written by {info.int8['quantizer']} "
                        f"({info.int8['artifact']}), which ONNX Runtime cannot read; export again with "
                        "deploy.int8_quantizer=onnxruntime, or run it with test.backend=openvino")
    return info.int8_artifact


def _onnxruntime(info: ExportInfo, deploy: DeployConfig):
    from detres.deploy.runtime_onnx import OnnxRuntimeDetector

    path = _int8_model(info, "onnxruntime") if deploy.precision == "int8" else info.artifact
    return OnnxRuntimeDetector(path=path, threads=deploy.threads)


def _openvino(info: ExportInfo, deploy: DeployConfig):
    from detres.deploy.runtime_openvino import OpenVinoDetector

    path = _int8_model(info, "openvino") if deploy.precision == "int8" else info.artifact
    return OpenVinoDetector(path=path, threads=deploy.threads, bf16=deploy.precision == "bf16",
                            static_shapes=deploy.static_shapes, hint=deploy.ov_hint, streams=deploy.ov_streams)


RUNTIMES: dict[str, Runtime] = {
    "onnxruntime": Runtime(precisions=("fp32", "int8"), open=_onnxruntime),
    "openvino": Runtime(precisions=("fp32", "int8", "bf16"), open=_openvino),
}
BACKENDS = ("torch", *RUNTIMES)  # test.backend: torch runs checkpoints eagerly, the others an export folder


def check_runtime(backend: str, precision: str, deploy: DeployConfig | None = None) -> Runtime:
    """The runtime of test.backend, checked against deploy.precision (and the other deploy.* runtime keys when
    `deploy` is given); ConfigError naming the option and the fix."""
    if backend not in BACKENDS:
        raise ConfigError(f"test.backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"deploy.precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if deploy is not None:
        _check_keys(deploy)
    if backend == "torch":
        raise ConfigError("test.backend=torch runs checkpoints (--ckpt), not an export folder; set "
                          f"test.backend to one of {', '.join(RUNTIMES)} for --model")
    runtime = RUNTIMES[backend]
    if precision != "auto" and precision not in runtime.precisions:  # auto: one of them (auto_precision)
        able = [name for name, r in RUNTIMES.items() if precision in r.precisions]
        raise ConfigError(f"deploy.precision={precision} is not run by test.backend={backend} (it runs "
                          f"{', '.join(runtime.precisions)}); set test.backend={able[0]}")
    return runtime


def _check_keys(deploy: DeployConfig) -> None:
    if deploy.ov_hint not in OV_HINTS:
        raise ConfigError(f"deploy.ov_hint={deploy.ov_hint!r}: expected one of {', '.join(OV_HINTS)}")
    for key in ("static_shapes", "ov_streams", "threads"):
        if getattr(deploy, key) < 0:
            raise ConfigError(f"deploy.{key}={getattr(deploy, key)}: expected 0 (off / the runtime's choice) or more")
    if deploy.ov_streams and deploy.ov_hint != "throughput":
        raise ConfigError(f"deploy.ov_streams={deploy.ov_streams} acts only with deploy.ov_hint=throughput; set "
                          "deploy.ov_hint=throughput or drop deploy.ov_streams")


def open_exported(folder: str | os.PathLike, *, backend: str, precision: str | None = None,
                  threads: int | None = None, deploy: DeployConfig | None = None):
    """(detector, info): detector(images) -> per image dict(boxes, scores, labels). backend: test.backend;
    deploy: the deploy.* settings (default: DeployConfig()); precision, threads: deploy.precision (int8 runs the
    folder's int8 model, bf16 OpenVINO's bf16 inference) and deploy.threads, over deploy's when given."""
    deploy = deploy or DeployConfig()
    changes = {k: v for k, v in (("precision", precision), ("threads", threads)) if v is not None}
    deploy = replace(deploy, **changes)
    runtime = check_runtime(backend, deploy.precision, deploy)
    info = read_export_info(folder)
    if deploy.precision == "auto":
        deploy = replace(deploy, precision=auto_precision(info, backend))
    return runtime.open(info, deploy), info


def auto_precision(info: ExportInfo, backend: str) -> str:
    """What deploy.precision=auto runs from an export folder: its int8 model when the runtime reads it and its
    recorded accuracy lost no more than the bound against fp32 (or was not measured: the folder's maker asked for
    int8 without ground truth), else fp32. The choice is logged with its reason."""
    if info.int8_artifact is None or not info.int8_artifact.is_file():
        return "fp32"
    if backend == "onnxruntime" and info.int8_artifact.suffix != ".onnx":
        log.info("deploy.precision=auto: fp32, since %s's int8 model (%s) is OpenVINO IR, which ONNX Runtime cannot "
                 "read", info.folder, info.int8["quantizer"])
        return "fp32"
    kept = kept_bound(info.int8.get("accuracy"))
    if kept is False:
        log.warning("deploy.precision=auto: fp32, since %s's int8 model lost more than %s against fp32 (%s); set "
                    "deploy.precision=int8 to run it anyway", info.folder,
                    ", ".join(f"{k} {v}" for k, v in BOUND.items()), info.int8["accuracy"])
        return "fp32"
    log.info("deploy.precision=auto: int8 (%s's %s model%s)", info.folder, info.int8["quantizer"],
             "" if kept is None else ", whose recorded accuracy kept the bound")
    return "int8"
