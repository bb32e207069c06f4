"""Memory over a long run: the RSS probe sees real allocations, and 300 training iterations do not grow it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detres.config import load_config
from detres.engine.memory import MemoryTrace, rss_mib
from detres.engine.soak import soak_memory
from detres.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes.generate(tmp_path_factory.mktemp("shapes"), seed=1, num_train=16, num_val=4, min_size=64,
                                max_size=96)


def _tiny(data: Path, run: Path) -> list[str]:
    return [f"data.train.ann_file={data}/coco/annotations/instances_train.json",
            f"data.train.image_dir={data}/coco/train",
            f"data.test.ann_file={data}/coco/annotations/instances_val.json", f"data.test.image_dir={data}/coco/val",
            f"output.dir={run}", "data.num_workers=0", "model.backbone.width=8", "data.input.train_scales=[80]",
            "data.input.test_scale=80", "data.input.max_size=128", "model.rpn.anchor_sizes=[16,32,64]",
            "model.rpn.post_nms_topk_train=40", "model.rpn.post_nms_topk_test=20",
            "model.roi_head.batch_size_per_image=16", "solver.ims_per_batch=2", "solver.warmup_iters=2",
            "output.checkpoint_period=100", "output.log_period=100"]


def test_the_rss_probe_sees_memory_being_touched_and_released():
    before = rss_mib()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, every page written
    during = rss_mib()
    del block
    assert during - before > 56 and rss_mib() < during - 56
    trace = MemoryTrace(baseline_step=2)
    for step in (1, 2, 3):
        trace.record(step)
    assert trace.final_step == 3 and trace.baseline_mib is not None and abs(trace.growth) < 0.5


@pytest.mark.slow
def test_training_memory_is_flat_over_300_iterations(shapes, tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml", _tiny(shapes, tmp_path / "not_written"))
    result = soak_memory(cfg, iterations=300, baseline=50)
    trace = result.trace
    assert (trace.baseline_step, trace.final_step) == (50, 300)
    assert result.ratio < 1.10, result.summary()  # resident memory at 300 within 10% of that at 50
    # and within 64 MiB: most of the RSS is torch's own libraries, so 10% alone would let 300 kB/iteration pass
    assert trace.final_mib - trace.baseline_mib < 64, result.summary()
    assert not (tmp_path / "not_written").exists()  # the soak ran in a temporary folder, now removed
    with pytest.raises(ConfigError, match="baseline"):
        soak_memory(cfg, iterations=50, baseline=50)


def test_the_soak_tool_prints_both_measurements_and_the_ratio(shapes, tmp_path):
    cmd = [sys.executable, str(REPO / "tools" / "soak_memory.py"), "--cfg", str(REPO / "configs" / "demo.yaml"),
           "--iterations", "4", "--baseline", "2", "--max-growth", "10", "--json", str(tmp_path / "soak.json"),
           *_tiny(shapes, tmp_path / "not_written")]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RSS at iteration 2:" in done.stdout and "RSS at iteration 4:" in done.stdout and "ratio" in done.stdout
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["iterations"] == 4 and report["baseline_rss_mib"] > 0 and report["ratio"] > 0
    assert not (tmp_path / "not_written").exists()
