"""A real `detres serve` process for the tests/test_serve_*.py files: a tiny untrained detector checkpoint, demo
images, a free port, and the server started as a user starts it (tools/serve.py in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from detres.config import config_to_dict, load_config
from detres.data.records import ClassMap
from detres.io.checkpoint import save_checkpoint
from detres.modeling.faster_rcnn import build_faster_rcnn
from detres.perf.agreement import compare_detections
from detres.perf.serve_bench import ServerProcess

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# the demo's architecture at width 8 on 64-pixel inputs: a few ms an image on one core
TINY = ["model.backbone.width=8", "model.rpn.anchor_sizes=[16,32]", "model.rpn.pre_nms_topk_test=100",
        "model.rpn.post_nms_topk_test=20", "data.input.test_scale=64", "data.input.max_size=128",
        "test.detections_per_img=20", "device=cpu"]
TOKEN = "s3cret-token"


def tiny_checkpoint(folder: Path) -> Path:
    """An untrained detector of the demo config (random weights give detections at score_thr 0)."""
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "demo.yaml", TINY)
    path = folder / "tiny.pth"
    classes = [f"class{i}" for i in range(1, cfg.model.num_classes + 1)]
    save_checkpoint({"model": build_faster_rcnn(cfg).state_dict(), "config": config_to_dict(cfg),
                     "class_map": ClassMap(names=classes, dataset_ids=list(range(1, len(classes) + 1))).to_dict()},
                    path)
    return path


def demo_images(folder: Path, count: int, *, seed: int = 3, size: tuple[int, int] = (48, 96)) -> Path:
    """`count` validation images of the demo's synthetic shapes (JPEG), sides in `size`."""
    data = make_shapes.generate(folder / "shapes", seed=seed, num_train=0, num_val=count, min_size=size[0],
                                max_size=size[1])
    return data / "coco" / "val"


def Server(args: list[str], log: Path) -> ServerProcess:  # noqa: N802 - reads as the class it returns
    """`detres serve ARGS` in a subprocess on a free port, one torch thread (the bench's server process)."""
    return ServerProcess(args, log, env=ENV)


def infer_reference(ckpt: Path | None, images: Path, out: Path, *extra: str) -> dict[str, list[dict]]:
    """`detres infer --score-thr 0` over `images` (with --ckpt, or the --model in `extra`): {file name:
    detections} of its detections.json."""
    model = ["--ckpt", str(ckpt)] if ckpt is not None else []
    done = subprocess.run([sys.executable, str(REPO / "tools" / "infer.py"), *model, "--input",
                           str(images), "--output", str(out), "--score-thr", "0", "--no-draw", "--workers", "0",
                           *extra], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "detections.json").read_text())["detections"]


def as_tensors(detections: list[dict]) -> dict[str, torch.Tensor]:
    """detres infer's json entries (labels "class1".."classC") -> dict(boxes, scores, labels) for
    compare_detections."""
    return {"boxes": torch.tensor([det["box"] for det in detections], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([det["score"] for det in detections], dtype=torch.float32),
            "labels": torch.tensor([int(det["label"].removeprefix("class")) for det in detections], dtype=torch.int64)}


def assert_same_detections(ours: list[list[dict]], reference: list[list[dict]]) -> None:
    """The issue's bound: every detection matched (same label, IoU > 0.99), scores within 1e-4."""
    agreement = compare_detections([as_tensors(d) for d in ours], [as_tensors(d) for d in reference],
                                   iou_thresh=0.99)
    assert agreement["num_theirs"] > 0
    assert agreement["num_ours"] == agreement["num_theirs"], agreement
    assert agreement["matched_frac"] == 1.0, agreement
    assert agreement["max_score_diff"] < 1e-4, agreement
