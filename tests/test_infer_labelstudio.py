"""`detres infer --format labelstudio`: Label Studio tasks with predictions, in the import format its docs give for
pre-annotations (HumanSignal/label-studio docs/source/guide/predictions.md), boxes in percent of the image."""

import json

import cv2
import numpy as np
import pytest

from detres.data.records import ClassMap
from detres.engine.detection_export import export_detections
from detres.io.detection_formats import LABELSTUDIO_FILE

CLASS_MAP = ClassMap(names=["circle", "square"], dataset_ids=[1, 2])


def check_import_format(tasks) -> None:
    """The documented shape of pre-annotated tasks: a list of {"data": {"image": url}, "predictions": [{"result":
    [...]}]}, each result a rectanglelabels region with from_name/to_name, the image's original size, and a value
    of x, y, width, height in percent (0..100) with its label; result ids unique."""
    assert isinstance(tasks, list)
    ids = []
    for task in tasks:
        assert set(task) == {"data", "predictions"} and isinstance(task["data"]["image"], str)
        for prediction in task["predictions"]:
            assert isinstance(prediction["model_version"], str) and isinstance(prediction["score"], float)
            for result in prediction["result"]:
                ids.append(result["id"])
                assert result["type"] == "rectanglelabels"
                assert (result["from_name"], result["to_name"]) == ("label", "image")
                assert isinstance(result["original_width"], int) and isinstance(result["original_height"], int)
                value = result["value"]
                for key in ("x", "y", "width", "height"):
                    assert 0.0 <= value[key] <= 100.0, (key, value)
                assert value["x"] + value["width"] <= 100.0 + 1e-9 and value["y"] + value["height"] <= 100.0 + 1e-9
                assert isinstance(value["rectanglelabels"], list) and all(isinstance(v, str) for v in
                                                                         value["rectanglelabels"])
    assert len(ids) == len(set(ids))


@pytest.fixture
def folder(tmp_path):
    """A 200x100 image (upright, no EXIF) and a 50x40 one in a subfolder, with infer's report for them."""
    images = tmp_path / "photos"
    (images / "sub").mkdir(parents=True)
    cv2.imwrite(str(images / "wide.png"), np.zeros((100, 200, 3), np.uint8))
    cv2.imwrite(str(images / "sub" / "small.jpg"), np.zeros((40, 50, 3), np.uint8))
    report = {"detections": {
        "wide.png": [{"box": [20.0, 10.0, 70.0, 60.0], "score": 0.9, "label": "square"},
                     {"box": [0.0, 0.0, 200.0, 100.0], "score": 0.5, "label": "circle"}],
        "sub/small.jpg": []}}
    return images, report


def test_labelstudio_tasks_validate_and_one_box_is_in_percent(folder, tmp_path):
    images, report = folder
    out = tmp_path / "out"
    written = export_detections(report, "labelstudio", out, input_dir=images, class_map=CLASS_MAP,
                                model_name="model_final.pth")
    assert written == [out / LABELSTUDIO_FILE]
    tasks = json.loads(written[0].read_text())
    check_import_format(tasks)
    by_image = {task["data"]["image"]: task for task in tasks}
    assert set(by_image) == {"/data/local-files/?d=wide.png", "/data/local-files/?d=sub/small.jpg"}
    prediction = by_image["/data/local-files/?d=wide.png"]["predictions"][0]
    assert prediction["model_version"] == "model_final.pth"
    assert prediction["score"] == pytest.approx((0.9 + 0.5) / 2)
    box = prediction["result"][0]
    # by hand: the box [20, 10, 70, 60] in a 200 x 100 image starts at 20/200 = 10% and 10/100 = 10%, and is
    # 50/200 = 25% wide and 50/100 = 50% high
    assert (box["original_width"], box["original_height"]) == (200, 100)
    assert box["value"] == {"x": 10.0, "y": 10.0, "width": 25.0, "height": 50.0, "rotation": 0,
                            "rectanglelabels": ["square"]}
    assert box["score"] == 0.9
    whole = prediction["result"][1]["value"]
    assert (whole["x"], whole["y"], whole["width"], whole["height"]) == (0.0, 0.0, 100.0, 100.0)
    assert by_image["/data/local-files/?d=sub/small.jpg"]["predictions"][0]["result"] == []


def test_the_checker_refuses_pixel_coordinates(folder, tmp_path):
    images, report = folder
    tasks = json.loads(export_detections(report, "labelstudio", tmp_path / "o", input_dir=images,
                                         class_map=CLASS_MAP)[0].read_text())
    wide = next(task for task in tasks if task["data"]["image"].endswith("wide.png"))
    check_import_format(tasks)
    wide["predictions"][0]["result"][0]["value"]["width"] = 150.0  # pixels, not percent
    with pytest.raises(AssertionError):
        check_import_format(tasks)
