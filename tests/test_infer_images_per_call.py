"""The folder loop hands a runtime as many images per call as it asks for (OpenVINO's parallel requests under the
throughput hint), in order, with unreadable files still failing alone, and the same detections as one at a time."""

from pathlib import Path

import cv2
import numpy as np
import torch

from detres.config import load_config
from detres.data.records import ClassMap
from detres.engine.folder_inference import images_per_call, infer_folder

REPO = Path(__file__).resolve().parents[1]
NAMES = ["circle", "square", "triangle", "star", "cross", "ring"]


class ImageStatsDetector:
    """A stand-in runtime whose one detection per image is a function of that image alone (its size and mean), so
    any mix-up of images within a call shows in the results; it records how many images each call held."""

    def __init__(self, per_call: int) -> None:
        self.images_per_call, self.calls = per_call, []

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls.append(len(images))
        out = []
        for image in images:
            h, w = image.shape[1:]
            mean = float(image.mean())
            out.append({"boxes": torch.tensor([[1.0, 2.0, w / 2, h / 2]]),
                        "scores": torch.tensor([0.5 + 0.4 * np.tanh(mean)]),
                        "labels": torch.tensor([1 + int(abs(mean) * 100) % 6])})
        return out


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "images"
    folder.mkdir()
    for index in range(7):
        h, w = (48, 64) if index % 2 else (64, 48)  # two sizes, interleaved
        cv2.imwrite(str(folder / f"img_{index}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    (folder / "img_3b.jpg").write_bytes(b"not an image")  # sorted between img_3 and img_4
    return folder


def _run(detector, folder: Path, out: Path) -> dict:
    cfg = load_config(REPO / "configs" / "demo.yaml", ["data.input.test_scale=32", "data.input.max_size=64"])
    class_map = ClassMap(names=NAMES, dataset_ids=NAMES)
    return infer_folder(detector, class_map, cfg, torch.device("cpu"), folder, out, 0.0, draw=False)


def test_images_go_to_the_runtime_in_groups_with_the_same_results(tmp_path):
    folder = _folder(tmp_path)
    one, three = ImageStatsDetector(1), ImageStatsDetector(3)
    single = _run(one, folder, tmp_path / "one")
    grouped = _run(three, folder, tmp_path / "three")
    assert one.calls == [1] * 7
    # 8 files in groups of 3: [0 1 2] [3 3b 4] [5 6]; the unreadable 3b leaves its group one image short
    assert three.calls == [3, 2, 2]
    assert grouped["detections"] == single["detections"]
    assert len(grouped["detections"]) == 7
    assert grouped["failed"] == single["failed"] == ["img_3b.jpg"]


def test_the_eager_model_and_plain_callables_get_one_image_per_call():
    assert images_per_call(lambda images: images) == 1
    assert images_per_call(ImageStatsDetector(4)) == 4
