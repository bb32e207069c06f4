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
from detres.deploy.int8_recipes import LADDERS
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
VAL = 4  # test-split images (generated after the training ones: more of them leave those unchanged)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, config overrides): a width-8 detector trained 500 iterations on 8 shapes images."""
    root = tmp_path_factory.mktemp("quant")
    data = make_shapes.generate(root / "shapes", seed=2, num_train=CALIB, num_val=VAL, min_size=64, max_size=96)
    overrides = tiny_training_overrides(data, root / "run", 500)
    cfg = load_config(REPO / "configs" / "demo.yaml", overrides)
    train_detector(cfg)
    return root / "run" / "model_final.pth", cfg


def _export(ckpt: Path, out: Path, *extra: str) -> None:
    """tools/export.py; the int8 attempts are measured on the calibration images unless `extra` says otherwise."""
    from tools import export

    saved = sys.argv
    sys.argv = ["export", "--ckpt", str(ckpt), "--out", str(out), "deploy.int8_measure_images=0", *extra]
    try:
        assert export.main() == 0
    finally:
        sys.argv = saved


def _annotated_images(ckpt, cfg, split: str = "train", count: int = CALIB):
    """(images, truth) of `count` images of the checkpoint's data.<split>, as the export picks them."""
    _, _, stored = load_detector(str(ckpt), cfg)
    dataset = build_detection_dataset(getattr(stored.data, split), input_cfg=stored.data.input,
                                      pixel_mean=stored.model.backbone.pixel_mean,
                                      pixel_std=stored.model.backbone.pixel_std, train=False)
    return calibration_set(dataset, count)


@pytest.mark.parametrize("quantizer", sorted(QUANTIZERS))
def test_int8_detections_overlap_fp32_and_the_json_records_them(trained, tmp_path, quantizer):
    ckpt, cfg = trained
    out = tmp_path / "export"
    _export(ckpt, out, "--int8", "--calib", str(CALIB), f"deploy.int8_quantizer={quantizer}")
    info = read_export_info(out)
    record = info.int8
    recipe = next(r for r in LADDERS[quantizer] if r.name == record["recipe"])
    assert record["quantizer"] == quantizer and record["settings"] == recipe.settings()
    assert record["artifact"] == QUANTIZERS[quantizer].artifact and info.int8_artifact.is_file()
    assert record["calibration_images"] == CALIB
    accuracy = record["accuracy"]
    assert accuracy["runtime"] == QUANTIZERS[quantizer].runtime
    images, truth = _annotated_images(ckpt, cfg)
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
    # Measured here (recipe 1): nncf 71.79 -> 71.16, onnxruntime 71.79 -> 71.79 mAP@.5.
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



def test_auto_tries_both_tools_for_openvino_and_only_onnx_runtime_for_it():
    from detres.deploy.int8_recipes import Recipe, recipes

    names = [r.name for r in recipes("auto", "openvino", searched=True)]
    assert names == ["nncf", "nncf, output layers float", "nncf, as onnxruntime (conv/matmul inputs, min-max ranges)",
                     "onnxruntime", "onnxruntime, output layers float", "nncf, accuracy control"]  # expensive last
    assert recipes("auto", "onnxruntime", searched=True) == LADDERS["onnxruntime"]  # it cannot read NNCF's IR
    assert recipes("auto", "torch", searched=False) == [Recipe("nncf")]  # nothing to measure: the first only
    assert recipes("onnxruntime", "openvino", searched=True) == LADDERS["onnxruntime"]
    with pytest.raises(ConfigError, match="deploy.int8_quantizer='tensorrt'"):
        recipes("tensorrt", "openvino", searched=True)


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
    for quantizer, recipes in result["int8_recipes"].items():  # what each export tried, and which it installed
        assert recipes["installed"] in [a["recipe"] for a in recipes["attempts"]]
        assert recipes["attempts"][0]["recipe"] == LADDERS[quantizer][0].name
        assert f"| {recipes['installed']} (installed) |" in table
        assert f"(at export, on {recipes['images']})" in table  # the tiny run's data.test: its training images


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


def _float_inputs(onnx_or_ir: Path, layers: tuple[str, ...]) -> dict[str, bool]:
    """Per output layer: whether its data input comes straight from float math (no FakeQuantize / DequantizeLinear
    in front of it), read from the model as OpenVINO sees it (NNCF's IR, or ONNX Runtime's QDQ ONNX)."""
    import openvino as ov

    ops = {op.get_friendly_name(): op for op in ov.Core().read_model(str(onnx_or_ir)).get_ordered_ops()}
    return {name: not _reads_int8(ops.get(f"{name}/WithoutBiases", ops.get(name))) for name in layers}


def _reads_int8(op) -> bool:
    """Whether a layer's data input is quantized: NNCF's FakeQuantize, or the dequantizing ops of a QDQ model."""
    return op.input_value(0).get_node().get_type_name() in ("FakeQuantize", "Convert", "Multiply", "Subtract")


@pytest.mark.parametrize("quantizer", sorted(QUANTIZERS))
def test_the_output_layers_recipe_keeps_exactly_the_score_and_box_layers_float(trained, tmp_path, quantizer):
    """Recipe 2 of each ladder: the RPN's objectness/delta convs and the head's score/delta layers read float
    inputs, while in recipe 1 they read int8 ones; every other convolution stays int8 in both."""
    from detres.deploy.int8_recipes import Recipe, output_layers
    from detres.deploy.quantize import quantize_into

    ckpt, cfg = trained
    _export(ckpt, tmp_path / "fp32")
    onnx_path = tmp_path / "fp32" / "model.onnx"
    layers = output_layers(onnx_path)
    # width-8 demo model: RPN cls_logits + bbox_pred (convs), head cls_score + bbox_pred (Gemm)
    assert len(layers) == 4
    images, _ = _annotated_images(ckpt, cfg)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = quantize_into(onnx_path, images, tmp_path / "a", quantizer)
    recipe = Recipe(quantizer, outputs_float=True)
    kept = quantize_into(onnx_path, images, tmp_path / "b", quantizer, recipe.options(onnx_path, None, 0.5))
    assert not any(_float_inputs(plain, layers).values())
    assert all(_float_inputs(kept, layers).values())
    assert _int8_layer_count(kept) == _int8_layer_count(plain) - len(layers) > 10


def _int8_layer_count(path: Path) -> int:
    """Convolutions and matrix products whose data input is quantized."""
    import openvino as ov

    ops = ov.Core().read_model(str(path)).get_ordered_ops()
    return sum(_reads_int8(op) for op in ops if op.get_type_name() in ("Convolution", "MatMul"))


def _quantized_input_types(ir: Path) -> set[str]:
    """The op types that read a FakeQuantize's output in an NNCF model: where it put int8."""
    import openvino as ov

    fake_quantizes = [op for op in ov.Core().read_model(str(ir)).get_ops() if op.get_type_name() == "FakeQuantize"]
    return {target.get_node().get_type_name() for op in fake_quantizes for target in op.output(0).get_target_inputs()}


def _input_ranges(ir: Path) -> dict[str, tuple[float, float]]:
    """Per layer whose data input an NNCF FakeQuantize quantizes: that quantizer's (input_low, input_high)."""
    import openvino as ov

    out = {}
    for op in ov.Core().read_model(str(ir)).get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        low, high = (op.input_value(i).get_node().get_data() for i in (1, 2))
        for target in op.output(0).get_target_inputs():
            if target.get_index() == 0:
                out[target.get_node().get_friendly_name()] = (float(low.min()), float(high.max()))
    return out


def test_the_as_onnxruntime_recipe_puts_int8_where_onnxruntime_does(trained, tmp_path):
    """NNCF recipe 3: int8 only at convolution and matrix-product inputs (ONNX Runtime's placement), while NNCF as
    is also quantizes the inputs of residual adds and pooling; no convolution or matrix product goes back to float;
    and activation ranges are the calibration images' min and max (ONNX Runtime's MinMax)."""
    from detres.deploy.int8_recipes import Recipe
    from detres.deploy.quantize import OV_INT8_OPS, quantize_into

    ckpt, cfg = trained
    _export(ckpt, tmp_path / "fp32")
    onnx_path = tmp_path / "fp32" / "model.onnx"
    images, _ = _annotated_images(ckpt, cfg)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = quantize_into(onnx_path, images, tmp_path / "a", "nncf")
    recipe = Recipe("nncf", as_onnxruntime=True)
    placed = quantize_into(onnx_path, images, tmp_path / "b", "nncf", recipe.options(onnx_path, None, 0.5))
    assert {"Add", "MaxPool"} <= _quantized_input_types(plain)
    assert _quantized_input_types(placed) <= OV_INT8_OPS
    # min-max ranges: each layer's input range spans the calibration images' whole range, so it is at least NNCF's
    # default (the mean over the images of each one's range) and wider where the images differ
    plain_ranges, placed_ranges = _input_ranges(plain), _input_ranges(placed)
    shared = sorted(set(plain_ranges) & set(placed_ranges))
    assert len(shared) > 5
    assert all(placed_ranges[n][1] >= plain_ranges[n][1] - 1e-4 for n in shared)
    assert all(placed_ranges[n][0] <= plain_ranges[n][0] + 1e-4 for n in shared)
    assert any(placed_ranges[n][1] > plain_ranges[n][1] * 1.05 for n in shared)
    # as is, some convolutions read int8 through a pooling or add that NNCF quantized in front of them instead
    assert _int8_layer_count(placed) >= _int8_layer_count(plain) > 10


def test_accuracy_control_brings_the_int8_loss_within_the_bound(trained, tmp_path, monkeypatch):
    """NNCF's accuracy control alone (its last recipe; its metric: the worse of the two mAP losses as a share of its
    bound): the installed model keeps the bound on the calibration images, measured here again, and is still int8.
    On this model the plain recipe lost 0.63 mAP@.5 (71.79 -> 71.16) and accuracy control reverted 1 of 42 layers."""
    from detres.deploy.int8_accuracy import kept_bound
    from detres.deploy.int8_recipes import Recipe

    ckpt, cfg = trained
    monkeypatch.setitem(LADDERS, "nncf", [Recipe("nncf", accuracy_control=True)])
    out = tmp_path / "export"
    _export(ckpt, out, "--int8", "--calib", str(CALIB), "deploy.int8_quantizer=nncf")
    record = read_export_info(out).int8
    assert record["recipe"] == "nncf, accuracy control"
    images, truth = _annotated_images(ckpt, cfg)
    fp32, _ = open_exported(out, backend="openvino", precision="fp32")
    int8, _ = open_exported(out, backend="openvino", precision="int8")
    measured = {"fp32": measure_map(fp32, images, truth), "int8": measure_map(int8, images, truth)}
    assert measured == {k: record["accuracy"][k] for k in ("fp32", "int8")}
    assert kept_bound(measured), measured
    assert _int8_layer_count(read_export_info(out).int8_artifact) > 10  # not reverted wholesale to float


def test_the_search_installs_the_first_recipe_that_kept_the_bound_and_records_every_attempt(trained, tmp_path):
    from detres.deploy.int8_accuracy import kept_bound

    ckpt, cfg = trained
    out = tmp_path / "export"
    _export(ckpt, out, "--int8", "--calib", str(CALIB), "deploy.int8_quantizer=nncf")
    record = read_export_info(out).int8
    attempts = record["attempts"]
    names = [r.name for r in LADDERS["nncf"]]
    assert [a["recipe"] for a in attempts] == names[:len(attempts)]  # in ladder order, stopping at the first kept
    assert all(a["kept_bound"] is False for a in attempts[:-1])
    assert all(a["kept_bound"] == kept_bound(a["accuracy"]) for a in attempts)
    chosen = attempts[-1] if attempts[-1]["kept_bound"] else None
    if chosen is not None:
        assert record["recipe"] == chosen["recipe"] and record["accuracy"] == chosen["accuracy"]
    assert not list(out.glob(".int8.*")), "a staging folder was left in the export"
    images, truth = _annotated_images(ckpt, cfg)
    int8, _ = open_exported(out, backend="openvino", precision="int8")
    assert measure_map(int8, images, truth) == record["accuracy"]["int8"]  # the installed model is the recorded one
    # deploy.int8_search=false: the first recipe only
    _export(ckpt, tmp_path / "plain", "--int8", "--calib", str(CALIB), "deploy.int8_quantizer=nncf",
            "deploy.int8_search=false")
    plain = read_export_info(tmp_path / "plain").int8
    assert [a["recipe"] for a in plain["attempts"]] == names[:1] and plain["recipe"] == names[0]


def test_the_attempts_are_measured_on_the_test_split_when_it_has_boxes(trained, tmp_path):
    """deploy.int8_measure_images (default 100): the recorded fp32 and int8 mAPs are those of the test split's
    images (all VAL of them here: fewer than asked), not of the calibration images."""
    import copy

    ckpt, cfg = trained
    shapes = ckpt.parents[1] / "shapes" / "coco"
    val = [f"data.test.ann_file={shapes}/annotations/instances_val.json", f"data.test.image_dir={shapes}/val"]
    out = tmp_path / "export"
    _export(ckpt, out, "--int8", "--calib", str(CALIB), "deploy.int8_quantizer=onnxruntime",
            "deploy.int8_measure_images=100", "deploy.int8_search=false", *val)
    accuracy = read_export_info(out).int8["accuracy"]
    assert accuracy["images"] == f"{VAL} images of data.test"
    val_cfg = copy.deepcopy(cfg)
    val_cfg.data.test.ann_file = f"{shapes}/annotations/instances_val.json"
    val_cfg.data.test.image_dir = f"{shapes}/val"
    images, truth = _annotated_images(ckpt, val_cfg, "test", VAL)
    int8, _ = open_exported(out, backend="onnxruntime", precision="int8")
    fp32, _ = open_exported(out, backend="onnxruntime", precision="fp32")
    assert measure_map(int8, images, truth) == accuracy["int8"]
    assert measure_map(fp32, images, truth) == accuracy["fp32"]
    assert measure_map(fp32, *_annotated_images(ckpt, cfg)) != accuracy["fp32"]  # another set of images


def test_a_test_split_without_boxes_measures_on_the_calibration_images(trained, tmp_path, caplog):
    import copy

    from detres.deploy.int8_data import int8_data

    _, cfg = trained
    coco = json.loads(Path(cfg.data.test.ann_file).read_text())
    coco["annotations"] = []
    (tmp_path / "empty.json").write_text(json.dumps(coco))
    stored = copy.deepcopy(cfg)
    stored.data.test.ann_file = str(tmp_path / "empty.json")
    data = int8_data(stored, 3, 100)
    assert data.measure.name == "the 3 calibration images" and len(data.measure.images) == len(data.calibration) == 3
    assert "data.test has no boxes" in caplog.text
    assert int8_data(cfg, 3, 0).measure.name == "the 3 calibration images"  # deploy.int8_measure_images=0
    assert int8_data(cfg, 3, 5).measure.name == "5 images of data.test"  # here data.test is the training set
    with pytest.raises(ConfigError, match="deploy.int8_measure_images=-1"):
        int8_data(cfg, 3, -1)


def test_when_no_recipe_kept_the_bound_the_one_that_lost_least_is_chosen():
    from detres.deploy.int8_search import _choose

    def attempt(name, map50, map_):
        accuracy = {"fp32": {"map50": 50.0, "map": 30.0}, "int8": {"map50": map50, "map": map_}}
        return {"recipe": name, "accuracy": accuracy, "kept_bound": False}, Path(name)

    # worst loss as a share of its bound: a 1.0/0.5 = 2.0, b max(0.6/0.5, 3/1) = 3.0, c max(0.9/0.5, 0.5/1) = 1.8
    tried = [attempt("a", 49.0, 30.0), attempt("b", 49.4, 27.0), attempt("c", 49.1, 29.5)]
    assert _choose(tried)[0]["recipe"] == "c"
    kept = {"recipe": "d", "accuracy": None, "kept_bound": True}, Path("d")
    assert _choose([tried[0], kept, tried[2]])[0]["recipe"] == "d"


def test_the_worst_loss_is_the_larger_share_of_its_bound():
    """Accuracy control's metric and the choice above: at most 1 keeps both bounds; NaN (no scored class) is none."""
    from detres.deploy.int8_accuracy import kept_bound, worst_loss

    fp32 = {"map50": 50.0, "map": 30.0}
    assert worst_loss(fp32, {"map50": 49.6, "map": 29.5}) == pytest.approx(0.8)  # 0.4/0.5 vs 0.5/1.0
    assert worst_loss(fp32, {"map50": 50.0, "map": 28.5}) == pytest.approx(1.5)  # mAP@[.5,.95] breaks it
    assert worst_loss(fp32, {"map50": 51.0, "map": 31.0}) == pytest.approx(-1.0)  # a gain on both
    assert worst_loss({"map50": float("nan"), "map": 30.0}, {"map50": float("nan"), "map": 29.0}) == 1.0
    for int8 in ({"map50": 49.6, "map": 29.5}, {"map50": 50.0, "map": 28.5}, {"map50": 49.4, "map": 30.0}):
        assert kept_bound({"fp32": fp32, "int8": int8}) == (worst_loss(fp32, int8) <= 1.0)
