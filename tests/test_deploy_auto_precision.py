"""deploy.precision=auto (the default): an export folder runs its int8 model when the runtime reads it and its
recorded accuracy kept the bound (mAP@.5 -0.5, mAP@[.5,.95] -1.0), else fp32; the eager model takes fp32 or auto."""

import logging

import pytest

from detres.config import load_config
from detres.deploy.artifact import ExportInfo
from detres.deploy.int8_accuracy import kept_bound
from detres.deploy.loader import auto_precision
from detres.deploy.option_policy import check_options


def _accuracy(fp32: tuple[float, float], int8: tuple[float, float]) -> dict:
    return {"runtime": "openvino", "images": "8 calibration images",
            "fp32": {"map50": fp32[0], "map": fp32[1]}, "int8": {"map50": int8[0], "map": int8[1]}}


def _folder(tmp_path, artifact: str | None, accuracy: dict | None = None, quantizer: str = "nncf") -> ExportInfo:
    int8 = None
    if artifact:
        (tmp_path / artifact).write_bytes(b"model")
        int8 = {"artifact": artifact, "quantizer": quantizer, "settings": {}, "calibration_images": 8,
                "accuracy": accuracy}
    return ExportInfo(folder=tmp_path, data={"format": "onnx", "artifact": "model.onnx", "int8": int8})


@pytest.mark.parametrize("fp32,int8,kept", [
    ((60.0, 30.0), (59.5, 29.0), True),    # exactly at both bounds
    ((60.0, 30.0), (59.49, 29.5), False),  # mAP@.5 lost 0.51
    ((60.0, 30.0), (60.2, 28.9), False),   # mAP@[.5,.95] lost 1.1
    ((60.0, 30.0), (61.0, 31.0), True),    # int8 above fp32
])
def test_the_bound_is_both_metrics_within_their_loss(fp32, int8, kept):
    assert kept_bound(_accuracy(fp32, int8)) is kept


def test_auto_runs_int8_only_where_it_kept_the_bound_and_the_runtime_reads_it(tmp_path, caplog):
    for name in ("none", "kept", "lost", "unmeasured"):
        (tmp_path / name).mkdir()
    assert auto_precision(_folder(tmp_path / "none", None), "openvino") == "fp32"
    kept = _folder(tmp_path / "kept", "model_int8.xml", _accuracy((60, 30), (59.8, 29.9)))
    assert auto_precision(kept, "openvino") == "int8"
    assert auto_precision(kept, "onnxruntime") == "fp32"  # NNCF's OpenVINO IR: ONNX Runtime cannot read it
    lost = _folder(tmp_path / "lost", "model_int8.onnx", _accuracy((60, 30), (55, 25)), quantizer="onnxruntime")
    with caplog.at_level(logging.WARNING, logger="detres.deploy"):
        assert auto_precision(lost, "onnxruntime") == "fp32"
    assert "deploy.precision=int8" in caplog.text  # the warning says how to run it anyway
    unmeasured = _folder(tmp_path / "unmeasured", "model_int8.onnx", None, quantizer="onnxruntime")
    assert auto_precision(unmeasured, "onnxruntime") == "int8"  # asked for at export, no ground truth to judge it


def test_the_eager_model_takes_fp32_and_auto_and_refuses_int8():
    for value in ("auto", "fp32"):
        check_options(load_config(None, [f"deploy.precision={value}"]), backend="torch")
    with pytest.raises(Exception, match="deploy.precision='int8' is for exported runtimes"):
        check_options(load_config(None, ["deploy.precision=int8"]), backend="torch")
