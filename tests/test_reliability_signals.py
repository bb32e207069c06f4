"""Ctrl-C in a terminal: SIGINT reaches the trainer and its loader workers at once; a checkpoint is written, the
run exits with 130 and no traceback, and no worker process is left behind.

(test_engine_det.py covers SIGTERM and SIGKILL + --resume with the loader in the main process.)
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detres.io.checkpoint import latest_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _overrides(data: Path, run: Path) -> list[str]:
    return [f"data.train.ann_file={data}/coco/annotations/instances_train.json",
            f"data.train.image_dir={data}/coco/train",
            f"data.test.ann_file={data}/coco/annotations/instances_val.json", f"data.test.image_dir={data}/coco/val",
            f"output.dir={run}", "output.tensorboard=false", "data.num_workers=2", "model.backbone.width=8",
            "data.input.train_scales=[80]", "data.input.test_scale=80", "data.input.max_size=128",
            "model.rpn.anchor_sizes=[16,32,64]", "model.rpn.post_nms_topk_train=40",
            "model.rpn.post_nms_topk_test=20", "model.roi_head.batch_size_per_image=16", "solver.ims_per_batch=2",
            "solver.warmup_iters=2", "solver.max_iter=100000", "output.checkpoint_period=2"]


def _group_is_gone(pgid: int, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_ctrl_c_with_loader_workers_checkpoints_and_exits_cleanly(tmp_path):
    data = make_shapes.generate(tmp_path / "shapes", seed=1, num_train=16, num_val=4, min_size=64, max_size=96)
    run = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "train_det.py"), "--cfg", str(REPO / "configs" / "demo.yaml"),
           *_overrides(data, run)]
    # a session of its own: the signal goes to the whole process group, as a terminal's Ctrl-C does
    process = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (run / "model_0000002.pth").exists():
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "signal 2: checkpoint written" in err and err.rstrip().endswith("interrupted")
    assert load_checkpoint(latest_checkpoint(run))["iteration"] > 2  # written at the signal
    assert not list(run.glob(".*.tmp"))
    assert _group_is_gone(process.pid), "loader worker processes outlived the trainer"
