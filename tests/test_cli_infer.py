"""`detres infer`/`test`/`eval` end to end on a tiny detector: the config taken from the checkpoint, and the
coco, csv and voc outputs read back by pycocotools, `detres eval`, the csv module and detres's VOC reader."""

import contextlib
import csv
import io
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from detres import commands
from detres.config import config_to_dict, config_to_yaml, load_config
from detres.data.records import ClassMap
from detres.data.voc import read_voc
from detres.errors import CheckpointError
from detres.io.checkpoint import save_checkpoint
from detres.modeling.faster_rcnn import build_faster_rcnn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

TINY = ["model.backbone.width=8", "model.rpn.anchor_sizes=[16,32]", "model.rpn.pre_nms_topk_test=50",
        "model.rpn.post_nms_topk_test=10", "data.input.test_scale=48", "data.input.max_size=96", "data.num_workers=0",
        "test.detections_per_img=10", "test.eval_metrics=[coco]"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Shapes val images, the training YAML and a checkpoint (untrained tiny detector) holding that config."""
    root = tmp_path_factory.mktemp("cli")
    data = make_shapes.generate(root / "shapes", seed=3, num_train=0, num_val=5, min_size=48, max_size=72)
    overrides = [*TINY, f"data.test.ann_file={data}/coco/annotations/instances_val.json",
                 f"data.test.image_dir={data}/coco/val", f"output.dir={root}/run"]
    cfg = load_config(REPO / "configs" / "demo.yaml", overrides)
    (root / "train.yaml").write_text(config_to_yaml(cfg))
    class_map = ClassMap(names=list(make_shapes.CLASSES), dataset_ids=list(make_shapes.CATEGORY_IDS))
    save_checkpoint({"model": build_faster_rcnn(cfg).state_dict(), "config": config_to_dict(cfg),
                     "class_map": class_map.to_dict()}, root / "model.pth")
    return {"root": root, "val": data / "coco" / "val", "ckpt": root / "model.pth", "yaml": root / "train.yaml",
            "class_map": class_map}


def _run(verb: str, *args) -> str:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert commands.run(verb, [str(a) for a in args]) == 0
    return out.getvalue()


def _infer(tiny, out: Path, *args) -> dict:
    _run("infer", "--ckpt", tiny["ckpt"], "--input", tiny["val"], "--output", out, "--score-thr", "0", *args)
    return json.loads((out / "detections.json").read_text())["detections"]


def test_infer_without_cfg_uses_the_checkpoints_config_and_overrides_go_on_top(tiny, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="detres.cli")
    stored = _infer(tiny, tmp_path / "stored")
    assert f"config: the one stored in {tiny['ckpt']}" in caplog.text
    explicit = _infer(tiny, tmp_path / "explicit", "--cfg", tiny["yaml"])
    assert f"config: {tiny['yaml']} (--cfg given: it wins" in caplog.text
    assert sum(map(len, stored.values())) > 0
    assert stored == explicit
    capped = _infer(tiny, tmp_path / "capped", "test.detections_per_img=2")
    assert max(map(len, capped.values())) == 2 < max(map(len, stored.values()))
    assert {k: v[:2] for k, v in stored.items()} == capped


def test_a_checkpoint_without_config_asks_for_cfg(tiny, tmp_path):
    import torch

    bare = tmp_path / "bare.pth"
    torch.save({"model": torch.load(tiny["ckpt"], weights_only=True)["model"]}, bare)
    with pytest.raises(CheckpointError, match=r"holds no config .* --cfg FILE"):
        commands.run("infer", ["--ckpt", str(bare), "--input", str(tiny["val"]), "--output", str(tmp_path / "o")])


def _ground_truth_near(detections: dict, val_ann: Path, class_map: ClassMap, out: Path) -> Path:
    """A COCO ground truth for the val images made of the detector's own top boxes, moved by a few pixels, so
    that the metrics are neither 0 nor 100 and depend on image ids, categories and coordinates being right."""
    source = json.loads(val_ann.read_text())
    id_of = {img["file_name"]: img["id"] for img in source["images"]}
    cat_of = dict(zip(class_map.names, class_map.dataset_ids))
    annotations = []
    for k, (name, dets) in enumerate(sorted(detections.items())):
        for j, det in enumerate(dets[:3]):
            x1, y1, x2, y2 = det["box"]
            shift = 1.0 + (k + j) % 3
            annotations.append({"id": len(annotations) + 1, "image_id": id_of[name], "iscrowd": 0,
                                "category_id": cat_of[det["label"]], "area": (x2 - x1) * (y2 - y1),
                                "bbox": [x1 + shift, y1, x2 - x1, y2 - y1 + shift]})
    gt = out / "gt.json"
    gt.write_text(json.dumps({**source, "annotations": annotations}))
    return gt


def test_coco_output_evaluates_with_detres_eval_to_the_metrics_of_detres_test(tiny, tmp_path):
    plain = _infer(tiny, tmp_path / "plain")
    gt = _ground_truth_near(plain, Path(load_config(tiny["yaml"]).data.test.ann_file), tiny["class_map"], tmp_path)
    _run("test", "--ckpt", tiny["ckpt"], "--out", tmp_path / "test.json", f"data.test.ann_file={gt}")
    _infer(tiny, tmp_path / "coco", "--format", "coco", "--gt", gt)
    results = tmp_path / "coco" / "detections_coco.json"
    assert not (tmp_path / "coco" / "detections_coco_images.json").exists()  # the ids are the ground truth's
    _run("eval", "--gt", gt, "--results", results, "--metric", "coco", "--out", tmp_path / "eval.json")
    tested = json.loads((tmp_path / "test.json").read_text())
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert 5 < tested["coco/AP50"] < 100 and tested["coco/AP"] < tested["coco/AP50"]
    assert evaluated.keys() == tested.keys()
    for key in tested:
        assert evaluated[key] == pytest.approx(tested[key], abs=1e-6), key
    # and pycocotools reads it directly
    coco = COCO(str(gt))
    assert len(coco.loadRes(str(results)).getAnnIds()) == sum(map(len, plain.values()))


def test_coco_without_gt_csv_and_voc_outputs_read_back(tiny, tmp_path):
    report = _infer(tiny, tmp_path / "coco", "--format", "coco")
    names = sorted(report)
    images = json.loads((tmp_path / "coco" / "detections_coco_images.json").read_text())
    assert [(i["id"], i["file_name"]) for i in images["images"]] == list(enumerate(names, start=1))
    for img in images["images"]:
        assert (img["height"], img["width"]) == cv2.imread(str(tiny["val"] / img["file_name"])).shape[:2]
    coco = COCO(str(tmp_path / "coco" / "detections_coco_images.json"))
    dets = coco.loadRes(str(tmp_path / "coco" / "detections_coco.json"))
    assert len(dets.getAnnIds(imgIds=[2])) == len(report[names[1]])

    _infer(tiny, tmp_path / "csv", "--format", "csv")
    with open(tmp_path / "csv" / "detections.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "class", "score", "x1", "y1", "x2", "y2"]
    expected = [(n, d["label"], d["score"], *d["box"]) for n in names for d in report[n]]
    assert [(r["image"], r["class"], float(r["score"]), *(float(r[k]) for k in ("x1", "y1", "x2", "y2")))
            for r in rows] == expected

    _infer(tiny, tmp_path / "voc", "--format", "voc")
    devkit = tmp_path / "VOCdevkit"
    devkit.mkdir()
    (devkit / "VOC2007").symlink_to(tmp_path / "voc" / "voc")  # the reader wants VOCdevkit/VOC<year>
    records, class_map = read_voc(devkit, ["2007:default"])
    assert class_map.names == tiny["class_map"].names
    assert [Path(r.image_path).stem for r in records] == [Path(n).stem for n in names]
    for rec, name in zip(records, names):
        assert (rec.height, rec.width) == cv2.imread(str(tiny["val"] / name)).shape[:2]
        boxes = np.array([d["box"] for d in report[name]], np.float32).reshape(-1, 4)
        assert np.abs(rec.boxes - boxes).max(initial=0) <= 0.5 + 1e-4  # VOC holds whole pixels
        assert [class_map.name_of(int(label)) for label in rec.labels] == [d["label"] for d in report[name]]
