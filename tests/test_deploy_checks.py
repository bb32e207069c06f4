"""Refused options, bad inputs and bad export folders each give one clear error naming what was expected; the
OpenVINO runtime opens no network connection. A hand-made three-output ONNX graph stands in for a detector."""

import json
import socket

import numpy as np
import onnx
import pytest
import torch
from deploy_helpers import CLASS_MAP
from onnx import TensorProto, helper

import detres
from detres.config import load_config
from detres.deploy.artifact import FORMAT_VERSION, INFO_FILE, build_info, read_export_info, write_info
from detres.deploy.export import check_exportable
from detres.deploy.loader import open_exported
from detres.deploy.telemetry import disable_telemetry
from detres.errors import ConfigError, UserError


def _fake_graph(path):
    """image [1, 3, H, W] -> boxes [1, 4] (zeros), scores [1] (the image mean), labels [1] (ones)."""
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0),
             helper.make_node("Reshape", ["mean", "one"], ["scores"]),
             helper.make_node("Constant", [], ["boxes"], value=helper.make_tensor("b", TensorProto.FLOAT, [1, 4],
                                                                                   [0.0] * 4)),
             helper.make_node("Constant", [], ["labels"], value=helper.make_tensor("l", TensorProto.INT64, [1], [1]))]
    graph = helper.make_graph(
        nodes, "fake", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1])],
        initializer=[helper.make_tensor("one", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))


@pytest.fixture
def folder(tmp_path):
    _fake_graph(tmp_path / "model.onnx")
    write_info(tmp_path, build_info(load_config(None), CLASS_MAP, "onnx"))
    return tmp_path


@pytest.mark.parametrize(("override", "named"), [
    ("test.box_refine=true", "test.box_refine"), ("test.multiscale=true", "test.multiscale"),
    ("test.precision=bf16", "test.precision"), ("deploy.opset=11", "deploy.opset")])
def test_refused_options_name_themselves(override, named):
    with pytest.raises(ConfigError, match=named):
        check_exportable(load_config(None, [override]))
    with pytest.raises(ConfigError, match="ensemble"):
        check_exportable(load_config(None), num_models=2)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runs_and_rejects_bad_inputs(folder, backend):
    detector, info = open_exported(folder, backend=backend)
    image = torch.full((3, 40, 48), 0.25)
    det = detector([image])[0]
    assert det["scores"].tolist() == pytest.approx([0.25]) and det["labels"].tolist() == [1]
    with pytest.raises(UserError, match="3 channels"):
        detector([torch.zeros(1, 40, 48)])
    with pytest.raises(UserError, match="float32"):
        detector([torch.zeros(3, 40, 48, dtype=torch.float64)])
    with pytest.raises(UserError, match="float32"):
        detector([np.zeros((3, 40, 48), dtype=np.uint8)])
    with pytest.raises(UserError, match="sides from 32"):
        detector([torch.zeros(3, 16, 48)])
    with pytest.raises(UserError, match="batch 1"):
        detector([torch.zeros(2, 3, 40, 48)])


def test_json_holds_what_a_runtime_needs(folder):
    data = json.loads((folder / INFO_FILE).read_text())
    assert data["class_names"] == CLASS_MAP.names and data["format_version"] == FORMAT_VERSION
    assert data["input"]["pixel_mean"] == [0.485, 0.456, 0.406] and data["input"]["channels"] == 3
    assert {"torch", "onnxruntime", "openvino"} <= set(data["versions"])
    assert data["config"]["model"]["num_classes"] == 80 and data["detres_version"] == detres.__version__


def _rewrite(folder, **changes):
    data = json.loads((folder / INFO_FILE).read_text())
    data.update(changes)
    (folder / INFO_FILE).write_text(json.dumps(data))


def test_bad_folders_are_refused(folder, tmp_path_factory):
    with pytest.raises(UserError, match=f"no {INFO_FILE}"):
        read_export_info(tmp_path_factory.mktemp("empty"))
    _rewrite(folder, detres_version="0.0.1")
    with pytest.raises(UserError, match="exported by detres '0.0.1'"):
        read_export_info(folder)
    _rewrite(folder, detres_version=detres.__version__, format_version=FORMAT_VERSION + 1)
    with pytest.raises(UserError, match="format version"):
        read_export_info(folder)
    _rewrite(folder, format_version=FORMAT_VERSION)
    with pytest.raises(ConfigError, match="test.backend=torch runs checkpoints"):
        open_exported(folder, backend="torch")
    with pytest.raises(UserError, match="no int8 model"):
        open_exported(folder, backend="openvino", precision="int8")
    with pytest.raises(UserError, match="no int8 model"):
        open_exported(folder, backend="onnxruntime", precision="int8")
    with pytest.raises(ConfigError, match="deploy.precision=bf16 is not run by test.backend=onnxruntime.*openvino"):
        open_exported(folder, backend="onnxruntime", precision="bf16")
    (folder / "model.onnx").unlink()
    with pytest.raises(UserError, match="model.onnx is missing"):
        read_export_info(folder)


def test_openvino_opens_no_socket(folder, monkeypatch):
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    disable_telemetry()
    detector, _ = open_exported(folder, backend="openvino")
    detector([torch.zeros(3, 32, 32)])
    assert attempts == []
