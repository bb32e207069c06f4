"""model.weights: fine-tuning a detector from a detector copies shared layers and the rows of shared classes."""

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from detres.config import config_to_dict, load_config
from detres.engine.train import train_detector
from detres.errors import CheckpointError, ConfigError
from detres.io.checkpoint import load_checkpoint, save_checkpoint
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.modeling.finetune import load_detector_weights, read_class_name_map

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

TINY = ["model.backbone.width=8", "model.rpn.anchor_sizes=[16,32,64]", "model.rpn.post_nms_topk_train=40",
        "model.rpn.post_nms_topk_test=20", "model.roi_head.batch_size_per_image=16"]


def _tiny_model(num_classes: int):
    return build_faster_rcnn(load_config(REPO / "configs/demo.yaml", [*TINY, f"model.num_classes={num_classes}"]))


@pytest.fixture()
def six_class_checkpoint(tmp_path):
    model = _tiny_model(6)
    with torch.no_grad():  # distinct values in every predictor row, so a copied row is told from a fresh one
        for p in model.roi_head.predictor.parameters():
            p.copy_(torch.randn_like(p))
    cfg = load_config(REPO / "configs/demo.yaml", TINY)
    path = save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg),
                            "class_map": {"names": make_shapes.CLASSES, "dataset_ids": [1, 2, 4, 5, 7, 9]}},
                           tmp_path / "six.pth")
    return model, path


def test_rows_of_shared_classes_are_copied_exactly_and_new_classes_keep_their_initialization(six_class_checkpoint,
                                                                                            caplog):
    old, path = six_class_checkpoint
    new = _tiny_model(3)  # ring (old label 6), disc (= circle, old label 1, through the name map), hexagon (new)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="detres.modeling"):
        report = load_detector_weights(new, path, class_names=["ring", "disc", "hexagon"], name_map={"disc": "circle"})
    o, n = old.roi_head.predictor, new.roi_head.predictor
    for new_label, old_label in ((0, 0), (1, 6), (2, 1)):  # background's row is kept
        assert torch.equal(n.cls_score.weight[new_label], o.cls_score.weight[old_label])
        assert torch.equal(n.cls_score.bias[new_label], o.cls_score.bias[old_label])
        new_rows, old_rows = slice(4 * new_label, 4 * new_label + 4), slice(4 * old_label, 4 * old_label + 4)
        assert torch.equal(n.bbox_pred.weight[new_rows], o.bbox_pred.weight[old_rows])
        assert torch.equal(n.bbox_pred.bias[new_rows], o.bbox_pred.bias[old_rows])
    key = "roi_head.predictor."
    assert torch.equal(n.cls_score.weight[3], fresh[key + "cls_score.weight"][3])
    assert torch.equal(n.bbox_pred.weight[12:16], fresh[key + "bbox_pred.weight"][12:16])
    old_state = old.state_dict()
    for name, value in new.state_dict().items():
        if not name.startswith(key):
            assert torch.equal(value, old_state[name]), name
    assert report.remapped == {"ring": "ring", "disc": "circle"} and report.new_classes == ["hexagon"]
    assert not report.reinitialized
    assert "rows of 2/3 classes copied by name (renamed: disc<-circle)" in caplog.text
    assert "classes hexagon" in caplog.text


def test_layers_of_another_shape_are_reinitialized_and_listed(six_class_checkpoint):
    _, path = six_class_checkpoint
    other = build_faster_rcnn(load_config(REPO / "configs/demo.yaml", [*TINY, "model.num_classes=2",
                                                                         "model.rpn.aspect_ratios=[1.0]"]))
    fresh = {k: v.clone() for k, v in other.state_dict().items()}
    report = load_detector_weights(other, path, class_names=["circle", "square"])
    # one aspect ratio instead of three: the RPN's output layers change shape, its 3x3 conv does not
    changed = ["rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias", "rpn.head.bbox_pred.weight",
               "rpn.head.bbox_pred.bias"]
    assert report.reinitialized == changed
    state = other.state_dict()
    assert all(torch.equal(state[k], fresh[k]) for k in changed)
    assert "rpn.head.conv.weight" in report.loaded
    assert report.remapped == {"circle": "circle", "square": "square"}


def test_bad_name_maps_and_non_detector_files_are_clear_errors(six_class_checkpoint, tmp_path):
    _, path = six_class_checkpoint
    with pytest.raises(ConfigError, match="maps to 'disk', which the checkpoint's classes do not include"):
        load_detector_weights(_tiny_model(1), path, class_names=["disc"], name_map={"disc": "disk"})
    classifier = save_checkpoint({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "cls.pth")
    with pytest.raises(CheckpointError, match="not a detres detection checkpoint.*model.backbone.weights"):
        load_detector_weights(_tiny_model(1), classifier, class_names=["circle"])
    bad = tmp_path / "map.yaml"
    bad.write_text("- aeroplane\n- airplane\n")
    with pytest.raises(ConfigError, match="must map new class names to old ones"):
        read_class_name_map(bad)


def test_the_voc_from_coco_name_map_sends_every_voc_class_to_its_coco_class():
    from detres.data.voc import VOC_CLASSES

    coco_of_voc = {"airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                   "dining table", "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch", "train",
                   "tv"}  # COCO's names of the 20 VOC classes (instances_*2017.json categories)
    for name in ("voc07_from_coco_r101.yaml", "voc12_from_coco_r101.yaml"):
        cfg = load_config(REPO / "configs" / name)
        assert cfg.model.weights and cfg.model.num_classes == 20
        name_map = read_class_name_map(REPO / cfg.model.class_name_map)
        assert {name_map.get(n, n) for n in VOC_CLASSES} == coco_of_voc


def _subset_coco(src: Path, dst: Path, keep: list[str]) -> Path:
    """The COCO json `src` with only the categories named in `keep` (and their boxes)."""
    data = json.loads(src.read_text())
    ids = {c["id"] for c in data["categories"] if c["name"] in keep}
    data["categories"] = [c for c in data["categories"] if c["id"] in ids]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in ids]
    dst.write_text(json.dumps(data))
    return dst


@pytest.mark.slow
def test_a_detector_fine_tuned_from_a_trained_one_starts_far_above_one_from_scratch(tmp_path):
    data = make_shapes.generate(tmp_path / "shapes", seed=5, num_train=24, num_val=24, min_size=64, max_size=80)
    ann = data / "coco/annotations"

    def overrides(run: str, train_ann: Path, test_ann: Path, *extra: str) -> list[str]:
        # tested on the training images: the source model is trained briefly, the question is only what transfers
        return [*TINY, f"data.train.ann_file={train_ann}", f"data.train.image_dir={data}/coco/train",
                f"data.test.ann_file={test_ann}", f"data.test.image_dir={data}/coco/train",
                f"output.dir={tmp_path / run}", "output.tensorboard=false", "data.num_workers=0",
                "data.input.train_scales=[96]", "data.input.test_scale=96", "data.input.max_size=128",
                "solver.ims_per_batch=4", "solver.base_lr=0.02", "solver.warmup_iters=10", "solver.steps=[200]",
                "test.eval_metrics=[voc07]", "output.log_period=1000", *extra]

    train_detector(load_config(REPO / "configs/demo.yaml", overrides(
        "source", ann / "instances_train.json", ann / "instances_train.json", "solver.max_iter=250")))
    subset = _subset_coco(ann / "instances_train.json", tmp_path / "subset.json", ["ring", "square", "star"])
    start = ["model.num_classes=0", "solver.max_iter=0"]  # evaluated at the first iteration: what it starts from
    tuned = train_detector(load_config(REPO / "configs/demo.yaml", overrides(
        "tuned", subset, subset, *start, f"model.weights={tmp_path / 'source/model_final.pth'}")))
    scratch = train_detector(load_config(REPO / "configs/demo.yaml", overrides("scratch", subset, subset, *start)))
    assert tuned["voc07/mAP"] > scratch["voc07/mAP"] + 5, (tuned["voc07/mAP"], scratch["voc07/mAP"])
    state = load_checkpoint(tmp_path / "tuned/model_final.pth")
    assert state["class_map"]["names"] == ["square", "star", "ring"] and state["config"]["model"]["num_classes"] == 3
