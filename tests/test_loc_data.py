"""The CLS-LOC reader on the synthetic set: class order, box convention, classification-only images, errors."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from detres.errors import DataError
from detres.localization.data import parse_loc_xml, read_class_map, read_loc_split


def _generator():
    """datasets/ is a folder of scripts, not a package: load the generator from its path."""
    path = Path(__file__).resolve().parents[1] / "datasets" / "make_loc_shapes.py"
    spec = importlib.util.spec_from_file_location("make_loc_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loc_root(tmp_path_factory) -> Path:
    return _generator().generate(tmp_path_factory.mktemp("loc") / "shapes", seed=1, num_train=4, num_val=2, size=48,
                    num_classes=3, unannotated_fraction=0.3)


def test_class_map_in_synset_file_order(loc_root):
    (loc_root / "LOC_synset_mapping.txt").write_text("n00000003 triangle\nn00000001 disc\nn00000002 square\n")
    try:
        cm = read_class_map(loc_root)
        assert cm.dataset_ids == ["n00000003", "n00000001", "n00000002"]
        assert cm.names == ["triangle", "disc", "square"]
        records, _ = read_loc_split(loc_root, "train")
        # label 1 is now the first listed synset
        assert {r.label for r in records if "/n00000003/" in r.image_path} == {1}
    finally:
        (loc_root / "LOC_synset_mapping.txt").write_text("n00000001 disc\nn00000002 square\nn00000003 triangle\n")


def test_without_mapping_file_classes_are_sorted_wnids(tmp_path, loc_root):
    (tmp_path / "Data" / "CLS-LOC" / "train" / "n2").mkdir(parents=True)
    (tmp_path / "Data" / "CLS-LOC" / "train" / "n1").mkdir(parents=True)
    assert read_class_map(tmp_path).dataset_ids == ["n1", "n2"]


def test_train_records_keep_unannotated_images_without_boxes(loc_root):
    records, cm = read_loc_split(loc_root, "train")
    assert len(records) == 12 and len(cm.names) == 3
    xmls = {p.stem for p in (loc_root / "Annotations/CLS-LOC/train").rglob("*.xml")}
    for r in records:
        has_xml = Path(r.image_path).stem in xmls
        assert (len(r.boxes) > 0) == has_xml
    assert any(len(r.boxes) == 0 for r in records)  # 30% unannotated at this seed: classification only


def test_val_label_and_boxes_come_from_the_xml(loc_root):
    records, cm = read_loc_split(loc_root, "val")
    assert len(records) == 6
    for r in records:
        names, boxes = parse_loc_xml(loc_root / "Annotations/CLS-LOC/val" / (Path(r.image_path).stem + ".xml"))
        assert cm.dataset_ids[r.label - 1] == names[0]
        np.testing.assert_array_equal(r.boxes, boxes)


def test_inclusive_pixel_indices_become_continuous_boxes(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><object><name>n1</name><bndbox><xmin>0</xmin><ymin>5</ymin><xmax>9</xmax>"
                   "<ymax>5</ymax></bndbox></object></annotation>")
    names, boxes = parse_loc_xml(xml)
    assert names == ["n1"]
    np.testing.assert_array_equal(boxes, [[0, 5, 10, 6]])  # columns 0..9 -> [0, 10); one row -> height 1


def test_broken_annotations_raise_data_errors_naming_the_file(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><object><name>n1</name><bndbox><xmin>9</xmin><ymin>0</ymin><xmax>3</xmax>"
                   "<ymax>4</ymax></bndbox></object></annotation>")
    with pytest.raises(DataError, match="bad.xml.*degenerate"):
        parse_loc_xml(bad)
    bad.write_text("<annotation><object>")
    with pytest.raises(DataError, match="bad.xml"):
        parse_loc_xml(bad)
    with pytest.raises(DataError, match="no class list under"):
        read_loc_split(tmp_path, "val")


def test_training_crops_carry_the_object_box_into_crop_pixels(tmp_path):
    import cv2

    from detres.localization.data import LocCropDataset, LocRecord

    img = np.zeros((60, 90, 3), np.uint8)
    img[15:45, 30:66] = 255  # object: [30, 15, 66, 45]
    cv2.imwrite(str(tmp_path / "a.png"), img)
    rec = LocRecord(str(tmp_path / "a.png"), 0, 1, np.array([[30, 15, 66, 45]], np.float32))
    ds = LocCropDataset([rec], crop_size=32, resize_range=(40, 40), flip=True, pixel_mean=[0.0] * 3,
                        pixel_std=[1.0] * 3)
    seen_cut = False
    for _ in range(30):
        image, boxes, label = ds[0]
        assert image.shape == (3, 32, 32) and label == 1
        bright = image[0] > 0.5
        if not bright.any():
            assert len(boxes) == 0  # the crop missed the object: no box, all anchors negative
            continue
        ys, xs = np.nonzero(bright.numpy())
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        assert len(boxes) == 1
        np.testing.assert_allclose(boxes[0].numpy(), found, atol=1.0)  # resize by 2/3, crop, maybe flip
        seen_cut |= bool(found[0] == 0 or found[2] == 32)
    assert seen_cut  # some crops cut the object: its box is clipped to the crop
