"""tools/infer.py: distinct, sanitized, flat output names that never leave --output; 1000 images at flat memory."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from detres.config import config_to_dict, load_config
from detres.data.records import ClassMap
from detres.io.checkpoint import save_checkpoint
from detres.modeling.faster_rcnn import build_faster_rcnn

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# a width-8 detector on 32-pixel inputs with few proposals: the whole tool runs in seconds on one core
TINY = ["model.backbone.width=8", "model.rpn.anchor_sizes=[16,32]", "model.rpn.pre_nms_topk_test=50",
        "model.rpn.post_nms_topk_test=10", "data.input.test_scale=32", "data.input.max_size=64"]


def _load_infer_tool():
    spec = importlib.util.spec_from_file_location("detres_tools_infer", REPO / "tools" / "infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """An untrained detector checkpoint with everything load_detector needs (model, config, class map)."""
    cfg = load_config(REPO / "configs" / "demo.yaml", TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    classes = [f"class{i}" for i in range(1, cfg.model.num_classes + 1)]
    save_checkpoint({"model": build_faster_rcnn(cfg).state_dict(), "config": config_to_dict(cfg),
                     "class_map": ClassMap(names=classes, dataset_ids=classes).to_dict()}, path)
    return path


def _infer(ckpt: Path, input_dir: Path, output_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "tools" / "infer.py"), "--cfg", str(REPO / "configs" / "demo.yaml"),
           "--ckpt", str(ckpt), "--input", str(input_dir), "--output", str(output_dir), "--score-thr", "0.0", *TINY]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_output_names_are_distinct_flat_sanitized_and_order_independent(tmp_path):
    infer = _load_infer_tool()
    inputs = [Path("x.png"), Path("x.jpg"), Path("a/b.jpg"), Path("a__b.jpg"), Path("X.JPG"), Path("x_png.jpg"),
              Path("..hidden..name.png"), Path("odd name;$(rm -rf).png"), Path("../../escape.jpg"),
              Path("deep/../../x.jpg"), Path("\u0444\u043e\u0442\u043e.jpg"), Path("\u0441\u043d\u0438\u043c.jpg"),
              Path("n" * 400 + ".png"), Path("n" * 400 + ".jpg"), Path("sub/gray.png")]
    names = infer.output_names(inputs)
    assert len({name.casefold() for name in names.values()}) == len(inputs)  # distinct, even on a case-blind disk
    for name in names.values():
        assert name.endswith(".jpg") and not name.startswith(".") and len(name.encode()) < 255
        assert "/" not in name and "\\" not in name and set(name) <= set("abcdefghijklmnopqrstuvwxyz"
                                                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert names[Path("sub/gray.png")] == "sub__gray.jpg"  # a name that clashes with nothing stays readable
    assert names[Path("x.png")].startswith("x_png") and names[Path("x.jpg")].startswith("x_jpg")
    assert infer.output_names(inputs[::-1]) == names  # the same folder always gets the same names


def test_colliding_and_odd_names_each_get_their_own_output_inside_the_output_folder(tiny_ckpt, tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    sizes = {"x.png": (30, 40), "x.jpg": (20, 50), "a/b.jpg": (28, 36), "a__b.jpg": (32, 44), "X.jpg": (24, 24),
             "..odd ;$(touch pwned)..png": (30, 30), "sub dir/\u0444\u043e\u0442\u043e.jpg": (26, 34)}
    for rel, (h, w) in sizes.items():
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(photos / rel), np.full((h, w, 3), 100, np.uint8))
    infer = _load_infer_tool()
    # a symlink planted in the output folder under one output's name must be replaced, not written through
    outside = tmp_path / "outside.txt"
    outside.write_text("must stay")
    out.mkdir()
    trap = out / infer.output_names([Path(r) for r in sizes])[Path("x.png")]
    trap.symlink_to(outside)
    before = {k: v for k, v in _tree(tmp_path).items() if not k.startswith("out/")}

    done = _infer(tiny_ckpt, photos, out)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "detections.json").read_text())
    assert set(report["detections"]) == set(sizes) and report["failed"] == []  # keyed by the relative input path
    assert set(report["outputs"]) == set(sizes) and len(set(report["outputs"].values())) == len(sizes)
    for rel, name in report["outputs"].items():
        written = out / name
        assert written.resolve().parent == out.resolve() and not written.is_symlink()
        assert cv2.imread(str(written)).shape[:2] == sizes[rel], f"{rel}'s output was overwritten by another"
    assert sorted(p.name for p in out.iterdir()) == sorted([*report["outputs"].values(), "detections.json"])
    after = {k: v for k, v in _tree(tmp_path).items() if not k.startswith("out/")}
    assert after == before and outside.read_text() == "must stay"  # nothing written outside --output
    assert not (tmp_path / "pwned").exists() and not (photos / "pwned").exists()


def test_unwritable_output_is_a_clear_error(tiny_ckpt, tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.zeros((20, 20, 3), np.uint8))
    out.mkdir()
    (out / "a.jpg").mkdir()  # the output name is taken by a folder: the write cannot replace it
    done = _infer(tiny_ckpt, photos, out)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "could not write" in done.stderr and "a.jpg" in done.stderr
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.slow
def test_a_folder_of_1000_images_completes_at_flat_memory(tiny_ckpt, tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1000):
        cv2.imwrite(str(photos / f"img_{i:04d}.png"), rng.integers(0, 255, (32, 32, 3), np.uint8))
    done = _infer(tiny_ckpt, photos, out)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "detections.json").read_text())
    assert len(report["detections"]) == 1000 and report["failed"] == []
    assert len(list(out.glob("*.jpg"))) == 1000
    assert report["images_per_second"] > 0 and "images/s" in done.stdout and "MiB" in done.stdout
    memory = report["memory"]
    assert memory["baseline_step"] == 100 and memory["final_step"] == 1000
    # resident memory after 1000 images within 10% (+16 MiB of allocator slack) of that after the first 100
    assert memory["final_rss_mib"] <= 1.10 * memory["baseline_rss_mib"] + 16, memory
