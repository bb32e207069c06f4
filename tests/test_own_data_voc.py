"""VOC sets as labelling tools write them (png/jpeg/tif images, a <filename> that disagrees), and num_classes 0."""

import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from detres.config import load_config
from detres.data.coco import read_coco
from detres.data.detection import build_detection_dataset
from detres.data.image_io import read_image_rgb
from detres.data.voc import read_voc
from detres.engine.loading import load_detector
from detres.engine.train import train_detector
from detres.errors import DataError
from detres.io.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The shapes set rewritten as labelImg/CVAT leave it: train images re-encoded as png, jpeg and tif, every xml's
    <filename> naming the photo it was labelled from, and one image kept only under that <filename>."""
    root = make_shapes.generate(tmp_path_factory.mktemp("labelled"), seed=2, num_train=8, num_val=3, min_size=64,
                                max_size=80)
    voc = root / "VOCdevkit/VOC2007"
    images = voc / "JPEGImages"
    for i, ext in enumerate([".png", ".jpeg", ".tif", ".PNG", ".png", ".png", ".jpg"]):
        stem = f"train_{i:06d}"
        if ext != ".jpg":
            bgr = cv2.imread(str(images / f"{stem}.jpg"))
            cv2.imwrite(str(images / f"{stem}{ext}"), bgr)
            (images / f"{stem}.jpg").unlink()
    for xml in (voc / "Annotations").glob("train_*.xml"):
        text = xml.read_text()
        xml.write_text(re.sub(r"<filename>[^<]*</filename>", f"<filename>IMG_{xml.stem[-4:]}.JPG</filename>", text))
    # the last training image exists only under the name its <filename> gives
    (images / "train_000007.jpg").rename(images / "IMG_0007.JPG")
    return root


def test_images_with_other_extensions_and_a_disagreeing_filename_read(labelled):
    records, class_map = read_voc(labelled / "VOCdevkit", ["2007:train"])
    names = [Path(r.image_path).name for r in records]
    assert names == ["train_000000.png", "train_000001.jpeg", "train_000002.tif", "train_000003.PNG",
                     "train_000004.png", "train_000005.png", "train_000006.jpg", "IMG_0007.JPG"]
    assert class_map.names == make_shapes.CLASSES
    coco, _ = read_coco(labelled / "coco/annotations/instances_train.json", labelled / "coco/train")
    for rec, ref in zip(records, coco):  # the same boxes as the COCO export of the same set
        np.testing.assert_allclose(rec.boxes, ref.boxes)
        np.testing.assert_array_equal(rec.labels, ref.labels)
    cfg = load_config(REPO / "configs/demo.yaml")
    cfg.data.train.format, cfg.data.train.root, cfg.data.train.sets = "voc", str(labelled / "VOCdevkit"), ["2007:train"]
    dataset = build_detection_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=[0, 0, 0],
                                      pixel_std=[1, 1, 1], train=False)
    for index, rec in enumerate(dataset.records):  # every image decodes, at the size its xml states
        image, _, meta = dataset[index]
        assert meta["orig_size"] == read_image_rgb(rec.image_path).shape[:2] == (rec.height, rec.width)


def test_a_file_named_by_the_xml_stem_wins_over_the_xml_filename(labelled):
    # train_000000.xml says IMG_0000.JPG; with both files present, the stem's file is the image
    images = labelled / "VOCdevkit/VOC2007/JPEGImages"
    decoy = images / "IMG_0000.JPG"
    decoy.write_bytes((images / "train_000006.jpg").read_bytes())
    try:
        records, _ = read_voc(labelled / "VOCdevkit", ["2007:train"])
        assert Path(records[0].image_path).name == "train_000000.png"
    finally:
        decoy.unlink()


def test_a_class_missing_from_classes_txt_stays_a_clear_error(labelled, tmp_path):
    listing = labelled / "VOCdevkit/VOC2007/classes.txt"
    original = listing.read_text()
    listing.write_text("".join(f"{c}\n" for c in make_shapes.CLASSES if c != "ring"))
    try:
        with pytest.raises(DataError, match=r"train_\d+\.xml: unknown class 'ring'; known: circle, square"):
            read_voc(labelled / "VOCdevkit", ["2007:train"])
    finally:
        listing.write_text(original)


def test_num_classes_0_takes_the_classes_from_the_training_set_into_the_checkpoint(labelled, tmp_path):
    run = tmp_path / "run"
    voc = labelled / "VOCdevkit"
    cfg = load_config(REPO / "configs/demo.yaml", [
        "model.num_classes=0", "data.train.format=voc", f"data.train.root={voc}", "data.train.sets=['2007:train']",
        "data.test.format=voc", f"data.test.root={voc}", "data.test.sets=['2007:val']", f"output.dir={run}",
        "output.tensorboard=false", "data.num_workers=0", "model.backbone.width=8", "data.input.train_scales=[64]",
        "data.input.test_scale=64", "model.rpn.post_nms_topk_train=40", "model.rpn.post_nms_topk_test=20",
        "model.roi_head.batch_size_per_image=16", "solver.ims_per_batch=2", "solver.max_iter=1",
        "test.eval_metrics=[voc07]"])
    train_detector(cfg)
    state = load_checkpoint(run / "model_final.pth")
    assert state["config"]["model"]["num_classes"] == 6
    assert state["class_map"]["names"] == make_shapes.CLASSES
    assert load_config(run / "config.yaml").model.num_classes == 6
    model, class_map, _ = load_detector(run / "model_final.pth")
    assert model.roi_head.predictor.cls_score.out_features == 7 and class_map.names == make_shapes.CLASSES
