"""End to end on the synthetic CLS-LOC set with the tools: a tiny per-class RPN beats the whole-image box on
the LOC error on GT class, and the R-CNN stage beats the RPN alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: the suite runs 2 workers on 2 cores
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_tools_train_rpn_then_rcnn_and_each_stage_lowers_the_gt_class_loc_error(tmp_path):
    data, run = tmp_path / "shapes", tmp_path / "run"
    _run(str(REPO / "datasets" / "make_loc_shapes.py"), "--out", str(data), "--seed", "3", "--num-train", "25",
         "--num-val", "10")
    overrides = [f"data.train.root={data}", f"data.test.root={data}", f"output.dir={run}", "solver.max_iter=400",
                 "solver.steps=[300]", "solver.base_lr=0.05", "loc.rcnn_max_iter=200", "loc.rcnn_steps=[150]",
                 "loc.rcnn_input_size=32", "output.log_period=100"]
    cfg = str(REPO / "configs" / "loc_demo.yaml")
    _run(str(REPO / "tools" / "train_loc.py"), "--cfg", cfg, "--stage", "rpn", *overrides)
    _run(str(REPO / "tools" / "train_loc.py"), "--cfg", cfg, "--stage", "rcnn", *overrides)
    assert (run / "rpn" / "model_final.pth").is_file() and (run / "rcnn" / "model_final.pth").is_file()
    out = _run(str(REPO / "tools" / "test_loc.py"), "--cfg", cfg, "--out", str(tmp_path / "m.json"), *overrides)
    assert "LOC err on GT CLS" in out and "RPN+RCNN" in out
    m = json.loads((tmp_path / "m.json").read_text())
    whole, rpn = m["loc/whole_image/gt_cls_err"], m["loc/rpn_dense/gt_cls_err"]
    rcnn = m["loc/rpn_rcnn_dense/gt_cls_err"]
    assert rpn < whole - 5.0, m
    assert rcnn < rpn - 10.0, m
    assert m["loc/gt_cls_err"] == rcnn
