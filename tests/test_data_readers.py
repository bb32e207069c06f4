"""Detection readers: COCO and VOC agree on the same images, bad files give clear errors, transforms keep boxes."""

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from detres.data.coco import read_coco
from detres.data.image_io import read_image_rgb
from detres.data.transforms import resize_and_flip
from detres.data.voc import read_voc
from detres.errors import DataError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes.generate(tmp_path_factory.mktemp("shapes"), seed=3, num_train=12, num_val=4)


def test_coco_and_voc_readers_give_identical_records(shapes):
    coco, coco_map = read_coco(shapes / "coco/annotations/instances_train.json",
                               shapes / "VOCdevkit/VOC2007/JPEGImages")
    voc, voc_map = read_voc(shapes / "VOCdevkit", ["2007:train"])
    assert coco_map.names == voc_map.names == make_shapes.CLASSES
    assert coco_map.dataset_ids == make_shapes.CATEGORY_IDS  # non-contiguous ids map to labels 1..C and back
    assert len(coco) == len(voc) == 12
    for a, b in zip(coco, voc):
        assert a.image_path == b.image_path and (a.width, a.height) == (b.width, b.height)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert sum(len(r.boxes) for r in coco) > 12


def test_generation_is_reproducible(shapes, tmp_path):
    again = make_shapes.generate(tmp_path / "again", seed=3, num_train=12, num_val=4)
    for rel in ("coco/annotations/instances_val.json", "VOCdevkit/VOC2007/JPEGImages/train_000004.jpg"):
        assert (shapes / rel).read_bytes() == (again / rel).read_bytes()


def _coco(tmp_path, **changes):
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 30], "iscrowd": 0}],
            "categories": [{"id": 3, "name": "thing"}]}
    for key, value in changes.items():
        section, index, field = key.split("__")
        data[section][int(index)][field] = value
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"annotations__0__image_id": 7}, "image_id 7 points to no image"),
    ({"annotations__0__category_id": 9}, "category_id 9 is not in 'categories'"),
    ({"images__0__width": -5}, "non-positive size"),
    ({"images__0__width": "wide"}, "'width' must be int"),
    ({"annotations__0__bbox": [1, 2, 3]}, "bbox must be 4 finite numbers"),
])
def test_bad_coco_entries_are_named(tmp_path, changes, message):
    with pytest.raises(DataError, match=message):
        read_coco(_coco(tmp_path, **changes), tmp_path)


def test_coco_nan_missing_keys_duplicates_and_malformed(tmp_path):
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = [1, 2, float("nan"), 4]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="finite"):
        read_coco(path, tmp_path)
    data["images"].append(dict(data["images"][0]))
    data["annotations"][0]["bbox"] = [1, 2, 3, 4]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="duplicate image id 1"):
        read_coco(path, tmp_path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="'categories'"):
        read_coco(path, tmp_path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="malformed json"):
        read_coco(path, tmp_path)
    with pytest.raises(DataError, match="not found"):
        read_coco(tmp_path / "missing.json", tmp_path)


def test_coco_boxes_are_clipped_and_degenerate_ones_dropped_with_a_log(tmp_path, caplog):
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"] = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [90, 70, 30, 30]},   # crosses the edge
                           {"id": 2, "image_id": 1, "category_id": 3, "bbox": [150, 10, 10, 10]},  # fully outside
                           {"id": 3, "image_id": 1, "category_id": 3, "bbox": [5, 5, -3, 4]},      # negative size
                           {"id": 4, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1}]
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="detres.data"):
        records, _ = read_coco(path, tmp_path)
    np.testing.assert_array_equal(records[0].boxes, [[90, 70, 100, 80], [1, 1, 6, 6]])
    np.testing.assert_array_equal(records[0].ignore, [False, True])  # crowd kept as an ignore region
    assert "dropped 2 degenerate boxes" in caplog.text


def _voc_tree(tmp_path, xml_text):
    year = tmp_path / "VOCdevkit" / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    (year / "Annotations" / "000001.xml").write_text(xml_text)
    return tmp_path / "VOCdevkit"


def test_voc_one_based_pixels_and_difficult(tmp_path):
    xml = ("<annotation><size><width>50</width><height>40</height></size>"
           "<object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax>"
           "<ymax>20</ymax></bndbox></object></annotation>")
    records, class_map = read_voc(_voc_tree(tmp_path, xml), ["2007:test"])
    np.testing.assert_array_equal(records[0].boxes, [[0, 1, 10, 20]])
    assert records[0].labels[0] == class_map.names.index("dog") + 1 and records[0].ignore[0]


@pytest.mark.parametrize("xml, message", [
    ("<annotation><size><width>5", "malformed or unsafe xml"),
    ("<annotation><size><width>5</width></size></annotation>", "missing or non-numeric field"),
    ("<annotation><size><width>50</width><height>40</height></size><object><name>dog</name><bndbox><xmin>a"
     "</xmin><ymin>1</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>", "non-numeric"),
    ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
     "<annotation><size><width>&lol2;</width></size></annotation>", "malformed or unsafe xml"),
    ("<annotation><size><width>50</width><height>40</height></size><object><name>unicorn</name><bndbox><xmin>1"
     "</xmin><ymin>1</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>", "unknown class 'unicorn'"),
])
def test_bad_voc_xml_is_named(tmp_path, xml, message):
    with pytest.raises(DataError, match=message):
        read_voc(_voc_tree(tmp_path, xml), ["2007:test"])


def _red_left(height=20, width=30):
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :10] = (255, 0, 0)
    return image


def test_image_variants_become_upright_8bit_rgb(tmp_path):
    rgb = _red_left()
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 100, np.uint8)])).save(tmp_path / "alpha.png")
    cv2.imwrite(str(tmp_path / "sixteen.png"), (rgb[:, :, ::-1].astype(np.uint16) * 257))
    for name in ("palette.png", "cmyk.jpg", "alpha.png", "sixteen.png"):
        image = read_image_rgb(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (20, 30, 3), name
        assert image[5, 2, 0] > 240 and image[5, 2, 1] < 15 and image[5, 20].max() < 15, name
    gray = read_image_rgb(tmp_path / "gray.png")
    assert gray.shape == (20, 30, 3) and (gray[..., 0] == gray[..., 2]).all()
    exif_image = Image.fromarray(rgb)
    exif = exif_image.getexif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    exif_image.save(tmp_path / "exif.jpg", exif=exif)
    upright = read_image_rgb(tmp_path / "exif.jpg")
    assert upright.shape == (30, 20, 3) and upright[2, 10, 0] > 200 and upright[25, 10, 0] < 60


def test_unreadable_and_huge_images_are_clear_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "random.png").write_bytes(np.random.default_rng(0).bytes(2000))
    cv2.imwrite(str(tmp_path / "ok.jpg"), _red_left())
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("L", (6000, 5000)).save(tmp_path / "big.png")
    for name, message in [("empty.jpg", "empty file"), ("random.png", "not a readable image"),
                          ("cut.jpg", "truncated JPEG"), ("missing.jpg", "not found")]:
        with pytest.raises(DataError, match=message):
            read_image_rgb(tmp_path / name)
    with pytest.raises(DataError, match=r"30000000 pixels exceeds the limit of 1000000"):
        read_image_rgb(tmp_path / "big.png", max_pixels=1_000_000)


def test_resize_and_flip_keep_a_drawn_box_on_its_pixels():
    image = np.zeros((100, 160, 3), np.uint8)
    image[20:50, 30:90] = 255  # the box (30, 20, 90, 50)
    box = np.array([[30, 20, 90, 50]], np.float32)
    out, boxes, labels, ignore, scale = resize_and_flip(image, box, np.array([1]), np.array([False]), short=50,
                                                        max_size=1000, flip=True)
    assert scale == (0.5, 0.5) and out.shape == (50, 80, 3)
    ys, xs = np.nonzero(out[..., 0] > 127)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    np.testing.assert_allclose(boxes[0], found, atol=1.0)
    np.testing.assert_allclose(boxes[0], [80 - 45, 10, 80 - 15, 25], atol=1e-3)
    assert labels.tolist() == [1] and ignore.tolist() == [False]
