"""int8 by each quantizer (NNCF, ONNX Runtime's quantize_static), on a tiny trained detector, through `detres export
--int8`: the int8 detections overlap the fp32 ones, and the export json records the quantizer, its settings and the
fp32/int8 mAP measured on the calibration images. Also: --calib 0 is refused, and deploy.int8_quantizer's values.
"""

import json
import sys
from pathlib import Path

import pytest
from deploy_helpers import tiny_training_overrides

from detres.config import load_config
from detres.data.detection import build_detection_dataset
from detres.deploy.artifact import INFO_FILE, read_export_info
from detres.deploy.int8_accuracy import measure_map
from detres.deploy.loader import open_exported
from detres.deploy.quantize import QUANTIZERS, calibration_set, resolve_quantizer
from detres.engine.loading import load_detector
from detres.engine.train import train_detector
from detres.errors import ConfigError, UserError
from detres.perf.agreement import compare_detections

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

CALIB = 8  # all the training images: calibrated and measured on the same images, a few seconds per quantizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, config overrides): a width-8 detector trained 500 iterations on 8 shapes images."""
    root = tmp_path_factory.mktemp("quant")
    data = make_shapes.generate(root / "shapes", seed=2, num_train=CALIB, num_val=1, min_size=64, max_size=96)
    overrides = tiny_training_overrides(data, root / "run", 500)
    cfg = load_config(REPO / "configs" / "demo.yaml", overrides)
    train_detector(cfg)
    return root / "run" / "model_final.pth", cfg


def _export(ckpt: Path, out: Path, *extra: str) -> None:
    from tools import export

    saved = sys.argv
    sys.argv = ["export", "--ckpt", str(ckpt), "--out", str(out), *extra]
    try:
        assert export.main() == 0
    finally:
        sys.argv = saved


def _calibration(ckpt, cfg):
    _, _, stored = load_detector(str(ckpt), cfg)
    dataset = build_detection_dataset(stored.data.train, input_cfg=stored.data.input,
                                      pixel_mean=stored.model.backbone.pixel_mean,
                                      pixel_std=stored.model.backbone.pixel_std, train=False)
    return calibration_set(dataset, CALIB)


@pytest.mark.parametrize("quantizer", sorted(QUANTIZERS))
def test_int8_detections_overlap_fp32_and_the_json_records_them(trained, tmp_path, quantizer):
    ckpt, cfg = trained
    out = tmp_path / "export"
    _export(ckpt, out, "--int8", "--calib", str(CALIB), f"deploy.int8_quantizer={quantizer}")
    info = read_export_info(out)
    record = info.int8
    assert record["quantizer"] == quantizer and record["settings"] == QUANTIZERS[quantizer].settings
    assert record["artifact"] == QUANTIZERS[quantizer].artifact and info.int8_artifact.is_file()
    assert record["calibration_images"] == CALIB
    accuracy = record["accuracy"]
    assert accuracy["runtime"] == QUANTIZERS[quantizer].runtime
    images, truth = _calibration(ckpt, cfg)
    runtime = accuracy["runtime"]
    fp32, _ = open_exported(out, backend=runtime, precision="fp32")
    int8, _ = open_exported(out, backend=runtime, precision="int8")
    # the recorded figures are those of the two models on the calibration images, recomputed here
    assert measure_map(fp32, images, truth) == accuracy["fp32"]
    assert measure_map(int8, images, truth) == accuracy["int8"]
    assert accuracy["fp32"]["map50"] > 30  # a trained detector: its activations and scores are not random
    # Bound: every confident fp32 detection (score >= 0.5) has an int8 one of the same class at IoU >= 0.5, and
    # mAP@.5 moves by at most 5 points. Why it holds: weights are int8 per output channel (about 1/255 of each
    # channel's range), activations are calibrated on these very images, and a confident detection of a trained
    # model is far from the score threshold and its box far from IoU 0.5, so the rounding moves neither across.
    # 5 points on 8 images (about 20 objects) is one object; the 0.5-point bound of issue 25 needs a val split.
    # Measured here: nncf 55.85 -> 51.88, onnxruntime 55.85 -> 55.01 mAP@.5.
    ref, ours = fp32(images), int8(images)
    confident = [{k: v[d["scores"] >= 0.5] for k, v in d.items()} for d in ref]
    assert sum(len(d["boxes"]) for d in confident) >= 5
    assert _all_found(ours, confident)
    assert abs(accuracy["int8"]["map50"] - accuracy["fp32"]["map50"]) <= 5.0, accuracy
    if quantizer == "onnxruntime":  # its QDQ model runs in OpenVINO too
        ov_int8, _ = open_exported(out, backend="openvino", precision="int8")
        assert _all_found(ov_int8(images), confident)


def _all_found(ours, wanted) -> bool:
    """Every detection of `wanted` has one of `ours` with its label at IoU > 0.5 (ours may hold more)."""
    agreement = compare_detections(ours, wanted, iou_thresh=0.5)
    matched = round(agreement["matched_frac"] * max(agreement["num_ours"], agreement["num_theirs"]))
    return matched == agreement["num_theirs"]


def test_calib_zero_is_refused_and_nothing_is_written(trained, tmp_path, capsys):
    ckpt, _ = trained
    from tools import export

    saved = sys.argv
    sys.argv = ["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "x"), "--int8", "--calib", "0"]
    try:
        with pytest.raises(UserError, match="--calib 0: need at least 1 calibration image"):
            export.main()
    finally:
        sys.argv = saved
    assert not (tmp_path / "x" / INFO_FILE).exists()


def test_nncf_int8_is_refused_by_onnxruntime_with_the_fix(trained, tmp_path):
    ckpt, _ = trained
    out = tmp_path / "export"
    _export(ckpt, out, "--int8", "--calib", "2", "deploy.int8_quantizer=nncf")
    with pytest.raises(UserError, match="deploy.int8_quantizer=onnxruntime"):
        open_exported(out, backend="onnxruntime", precision="int8")
    assert json.loads((out / INFO_FILE).read_text())["int8"]["calibration_images"] == 2


def test_quantizer_names():
    assert resolve_quantizer("auto") == "nncf"
    assert resolve_quantizer("auto", "onnxruntime") == "onnxruntime"  # ONNX Runtime cannot read NNCF's IR
    assert resolve_quantizer("onnxruntime", "openvino") == "onnxruntime"
    with pytest.raises(ConfigError, match="deploy.int8_quantizer='tensorrt'"):
        resolve_quantizer("tensorrt")


def test_the_precision_table_runs_every_path_on_the_val_split(trained):
    """tools/bench_precision.py's table on the tiny model, at a tiny size: every row is there, the float rows agree
    (the same graph in float32), and each speed row has both ratios."""
    from detres.perf.precision_table import PATHS, format_precision_table, precision_table

    ckpt, cfg = trained
    result = precision_table(str(ckpt), cfg, calib=4, height=96, width=128, folder_images=2, runs=1, warmup=0)
    assert set(result["accuracy"]) == {row for row, *_ in PATHS}
    eager, ov = result["accuracy"]["eager fp32"], result["accuracy"]["openvino fp32"]
    assert eager["map50"] > 30 and abs(eager["map50"] - ov["map50"]) <= 0.1 and abs(eager["map"] - ov["map"]) <= 0.1
    assert {"peer eager fp32", "peer openvino default", "detres openvino int8", "detres onnxruntime int8"} <= set(
        result["batch1"])
    assert {"openvino int8 dynamic", "openvino int8 static", "openvino int8 static + throughput"} <= set(
        result["folder"])
    assert all(v > 0 for v in [*result["batch1"].values(), *result["folder"].values()])
    profile = result["profile"]
    assert set(profile) == {"detres openvino int8", "detres openvino fp32", "peer openvino fp32"}
    def int8_share(name):
        return profile[name]["by_precision"].get("I8", 0) / profile[name]["total_ms"]

    # the int8 model's convolutions ran in int8 (72% of its time on the tiny model); a float model runs only a few
    # integer ops (indices, casts) so (0.2% and 2.5%)
    assert int8_share("detres openvino int8") > 0.3 > 0.1 > int8_share("detres openvino fp32")
    assert all(abs(sum(p["by_type"].values()) - p["total_ms"]) < 0.5 for p in profile.values())  # rounding
    table = format_precision_table(result)
    assert "| openvino int8 (nncf) |" in table and "vs peer fastest fp32" in table and "layer counters" in table


def test_onnxruntime_calibration_walks_the_images_in_strides_that_divide_their_count():
    """ONNX Runtime's strided MinMax calibration needs a stride dividing the image count; each stride is read once."""
    import torch

    from detres.deploy.quantize import ORT_CALIB_CHUNK, _Reader, _stride

    assert [_stride(n) for n in (1, 2, 3, 4, 6, 7, 8, 64)] == [1, 2, 3, 4, 3, 1, 4, 4]
    assert all(_stride(n) <= ORT_CALIB_CHUNK and n % _stride(n) == 0 for n in range(1, 100))
    images = [torch.full((3, 32, 32), float(i)) for i in range(6)]
    reader = _Reader(images)
    seen = []
    for start in range(0, len(reader), _stride(len(reader))):
        reader.set_range(start_index=start, end_index=start + _stride(len(reader)))
        while (feed := reader.get_next()) is not None:
            seen.append(float(feed["image"][0, 0, 0, 0]))
    assert seen == [0, 1, 2, 3, 4, 5]
