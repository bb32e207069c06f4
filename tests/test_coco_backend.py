"""test.coco_backend reaches every COCO evaluation: training's (joint and the step-wise steps share the Trainer's),
`detres eval` (--coco-backend, it has no config) and `detres test` (tests/test_analysis_errors.py checks the two
backends' stats agree). A spy on faster-coco-eval's entry point proves which backend computed the numbers."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import detres.evaluation.coco as coco_eval
from detres.config import load_config
from detres.engine.train import train_detector
from detres.errors import ConfigError
from detres.evaluation.coco import detections_to_coco_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

pytest.importorskip("faster_coco_eval")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes.generate(tmp_path_factory.mktemp("shapes"), seed=1, num_train=8, num_val=4,
                                min_size=64, max_size=96)


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls of the faster-coco-eval backend, which still computes the stats."""
    calls = []
    real = coco_eval._faster_coco_eval_stats

    def counted(gt, results):
        calls.append(len(results))
        return real(gt, results)

    monkeypatch.setattr(coco_eval, "_faster_coco_eval_stats", counted)
    return calls


def _tiny(data: Path, run: Path, *extra: str):
    return load_config(REPO / "configs" / "demo.yaml", [
        f"data.train.ann_file={data}/coco/annotations/instances_train.json", f"data.train.image_dir={data}/coco/train",
        f"data.test.ann_file={data}/coco/annotations/instances_val.json", f"data.test.image_dir={data}/coco/val",
        f"output.dir={run}", "output.tensorboard=false", "data.num_workers=0", "model.backbone.width=8",
        "data.input.train_scales=[64]", "data.input.test_scale=64", "data.input.max_size=96",
        "model.rpn.anchor_sizes=[16,32,64]", "model.rpn.post_nms_topk_train=20", "model.rpn.post_nms_topk_test=10",
        "model.roi_head.batch_size_per_image=8", "solver.ims_per_batch=2", "solver.max_iter=1",
        "solver.warmup_iters=0", "test.eval_metrics=[coco]", *extra])


def test_training_evaluates_with_the_configured_backend(shapes, tmp_path, spy):
    metrics = train_detector(_tiny(shapes, tmp_path / "run", "test.coco_backend=faster_coco_eval"))
    assert len(spy) == 1 and "coco/AP" in metrics
    train_detector(_tiny(shapes, tmp_path / "ref"))  # the default stays pycocotools
    assert len(spy) == 1


def test_a_bad_backend_is_refused_before_training(shapes, tmp_path):
    with pytest.raises(ConfigError, match="test.coco_backend='cocoapi' is not known"):
        train_detector(_tiny(shapes, tmp_path / "run", "test.coco_backend=cocoapi"))
    assert not list((tmp_path / "run").glob("model_*.pth"))


def test_eval_tool_takes_the_backend(shapes, tmp_path, spy, monkeypatch, capsys):
    from detres.data.coco import read_coco

    ann = shapes / "coco" / "annotations" / "instances_val.json"
    records, class_map = read_coco(ann, shapes / "coco" / "val")
    gt_as_detections = {r.image_id: {"boxes": r.boxes, "scores": [1.0] * len(r.boxes), "labels": r.labels}
                        for r in records}
    (tmp_path / "res.json").write_text(json.dumps(detections_to_coco_results(gt_as_detections, class_map)))
    spec = importlib.util.spec_from_file_location("eval_det_tool", REPO / "tools" / "eval_det.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for backend, calls in (("pycocotools", 0), ("faster_coco_eval", 1)):
        monkeypatch.setattr(sys, "argv", ["eval_det.py", "--gt", str(ann), "--results", str(tmp_path / "res.json"),
                                          "--metric", "coco", "--coco-backend", backend,
                                          "--out", str(tmp_path / f"{backend}.json")])
        assert tool.main() == 0
        assert len(spy) == calls
    ours = [json.loads((tmp_path / f"{b}.json").read_text()) for b in ("pycocotools", "faster_coco_eval")]
    assert ours[0]["coco/AP"] == pytest.approx(100.0) and ours[1]["coco/AP"] == pytest.approx(100.0)
