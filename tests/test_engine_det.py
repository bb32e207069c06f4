"""Detection training engine: exact resume, reload, NaN stop, signals and kills, infer tool on bad folders."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detres.config import load_config
from detres.engine.inference import run_inference
from detres.engine.loading import load_detector
from detres.engine.train import train_detector
from detres.engine.trainer import NonFiniteLossError, Trainer, eval_loader
from detres.io.checkpoint import latest_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes.generate(tmp_path_factory.mktemp("shapes"), seed=1, num_train=16, num_val=4,
                                min_size=64, max_size=96)


def tiny_overrides(data: Path, run: Path, *extra: str) -> list[str]:
    return [f"data.train.ann_file={data}/coco/annotations/instances_train.json",
            f"data.train.image_dir={data}/coco/train",
            f"data.test.ann_file={data}/coco/annotations/instances_val.json", f"data.test.image_dir={data}/coco/val",
            f"output.dir={run}", "output.tensorboard=false", "data.num_workers=0", "model.backbone.width=8",
            "data.input.train_scales=[80]", "data.input.test_scale=80", "data.input.max_size=128",
            "model.rpn.anchor_sizes=[16,32,64]", "model.rpn.post_nms_topk_train=40",
            "model.rpn.post_nms_topk_test=20", "model.roi_head.batch_size_per_image=16", "solver.ims_per_batch=2",
            "solver.warmup_iters=2", "solver.steps=[5]", "test.eval_metrics=[voc07]", *extra]


def tiny_cfg(data, run, *extra):
    return load_config(REPO / "configs" / "demo.yaml", tiny_overrides(data, run, *extra))


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_gives_the_uninterrupted_run_bit_for_bit(shapes, tmp_path):
    full = train_detector(tiny_cfg(shapes, tmp_path / "full", "solver.max_iter=6"))
    train_detector(tiny_cfg(shapes, tmp_path / "split", "solver.max_iter=3"))
    resumed = train_detector(tiny_cfg(shapes, tmp_path / "split", "solver.max_iter=6"), resume=True)
    a, b = _weights(tmp_path / "full/model_final.pth"), _weights(tmp_path / "split/model_final.pth")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert resumed == full
    # a reloaded checkpoint predicts what the trained model predicted
    cfg = tiny_cfg(shapes, tmp_path / "full", "solver.max_iter=6")
    model, class_map, _ = load_detector(tmp_path / "full/model_final.pth", cfg)
    assert class_map.names == make_shapes.CLASSES
    trainer_cfg = tiny_cfg(shapes, tmp_path / "other", "solver.max_iter=6")
    dataset = Trainer(trainer_cfg).test_set
    first = run_inference(model, eval_loader(cfg, dataset), device=torch.device("cpu"), progress=False)
    second = run_inference(load_detector(tmp_path / "split/model_final.pth", cfg)[0], eval_loader(cfg, dataset),
                           device=torch.device("cpu"), progress=False)
    for image_id, det in first.items():
        np.testing.assert_array_equal(det["boxes"], second[image_id]["boxes"])


def test_existing_run_folder_is_refused_without_resume(shapes, tmp_path):
    train_detector(tiny_cfg(shapes, tmp_path / "run", "solver.max_iter=1"))
    with pytest.raises(Exception, match="already holds checkpoints; pass --resume"):
        Trainer(tiny_cfg(shapes, tmp_path / "run", "solver.max_iter=2"))


def test_non_finite_loss_stops_with_the_terms_named_and_keeps_the_checkpoint(shapes, tmp_path, monkeypatch):
    import detres.modeling.roi_head_training as roi_heads

    real = roi_heads.fast_rcnn_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        losses = real(*args, **kwargs)
        if calls["n"] > 2:
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return losses

    monkeypatch.setattr(roi_heads, "fast_rcnn_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 2: .*loss_cls=nan"):
        train_detector(tiny_cfg(shapes, tmp_path / "run", "solver.max_iter=6", "output.checkpoint_period=2"))
    last = latest_checkpoint(tmp_path / "run")
    assert last.name == "model_0000002.pth" and load_checkpoint(last)["iteration"] == 2

    calls["n"] = 0
    trainer = Trainer(tiny_cfg(shapes, tmp_path / "skip", "solver.max_iter=4", "solver.nan_policy=skip"))
    trainer.train()
    assert trainer.skipped_steps == 2 and trainer.iteration == 4


def _train_process(shapes, run, *extra):
    cmd = [sys.executable, str(REPO / "tools/train_det.py"), "--cfg", str(REPO / "configs/demo.yaml"),
           *tiny_overrides(shapes, run, "output.checkpoint_period=2", *extra)]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process, timeout=240):
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run_and_sigterm_checkpoints(shapes, tmp_path):
    run = tmp_path / "killed"
    process = _train_process(shapes, run, "solver.max_iter=8")
    _wait_for(run / "model_0000004.pth", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load_checkpoint(latest_checkpoint(run))["iteration"] >= 4  # the last complete checkpoint loads
    resumed = subprocess.run([sys.executable, str(REPO / "tools/train_det.py"), "--cfg",
                              str(REPO / "configs/demo.yaml"), "--resume",
                              *tiny_overrides(shapes, run, "output.checkpoint_period=2", "solver.max_iter=8")],
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(run.glob(".*.tmp"))  # a temporary file of a write cut by the kill is cleaned on resume
    train_detector(tiny_cfg(shapes, tmp_path / "straight", "output.checkpoint_period=2", "solver.max_iter=8"))
    a, b = _weights(run / "model_final.pth"), _weights(tmp_path / "straight/model_final.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)

    term_run = tmp_path / "terminated"
    process = _train_process(shapes, term_run, "solver.max_iter=100000")
    _wait_for(term_run / "model_0000002.pth", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err
    assert load_checkpoint(latest_checkpoint(term_run))["iteration"] > 2  # written at the signal


def test_infer_tool_skips_corrupt_files_reads_grayscale_and_refuses_output_inside_input(shapes, tmp_path):
    train_detector(tiny_cfg(shapes, tmp_path / "run", "solver.max_iter=2"))
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "sub" / "gray.png"), np.full((60, 70), 128, np.uint8))
    cv2.imwrite(str(folder / "colour.jpg"), np.zeros((50, 40, 3), np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    base = [sys.executable, str(REPO / "tools/infer.py"), "--cfg", str(REPO / "configs/demo.yaml"), "--ckpt",
            str(tmp_path / "run/model_final.pth"), "--input", str(folder), "--score-thr", "0.0",
            *tiny_overrides(shapes, tmp_path / "run")]
    done = subprocess.run([*base, "--output", str(tmp_path / "out")], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out/detections.json").read_text())
    assert set(report["detections"]) == {"sub/gray.png", "colour.jpg"} and report["failed"] == ["broken.jpg"]
    assert (tmp_path / "out/sub__gray.jpg").is_file()
    assert sorted(p.name for p in folder.rglob("*")) == ["broken.jpg", "colour.jpg", "gray.png", "sub"]
    refused = subprocess.run([*base, "--output", str(folder / "preds")], env=ENV, capture_output=True, text=True)
    assert refused.returncode == 2 and "inside --input" in refused.stderr and "Traceback" not in refused.stderr
    assert not (folder / "preds").exists()
