"""The options matrix: every test-time option on every backend, from a checkpoint and from an export folder, through
`detres test` (tools/test_det.py's main, in process) on a tiny trained model.

Each (option, backend, source) either gives eager's metrics within 0.1 AP, or is refused with an error that names
the option; which of the two is the options policy's (detres.deploy.option_policy) and is checked too, so that
refusing everything cannot pass. Eager's own metrics move when a result-changing option moves from its default.
"""

import json
import sys
from pathlib import Path

import pytest
from deploy_helpers import tiny_training_overrides

from detres.config import load_config
from detres.deploy.option_policy import BAKED, REFUSED, option
from detres.engine.train import train_detector
from detres.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

# 500 iterations of a width-8 detector on 12 shapes images: AP ~31, AP50 ~57 on those images (~25 s on one core),
# enough for every option below to move the metrics
TRAIN_ITERS = 500
# (override, whether it changes eager's metrics: the memory and speed knobs do not)
OPTIONS = [
    ("test.score_thresh=0.6", True),
    ("test.nms_thresh=0.7", True),
    ("test.detections_per_img=2", True),
    ("model.rpn.pre_nms_topk_test=8", True),
    ("model.rpn.post_nms_topk_test=2", True),
    ("model.rpn.nms_thresh=0.2", True),
    ("model.rpn.min_box_size=40", True),
    ("data.input.test_scale=64", True),
    ("test.tile_size=48", True),
    ("test.box_refine=true", True),
    ("test.multiscale=true", True),
    ("test.multiscale_rpn=true", True),
    ("test.precision=bf16", True),
    ("model.roi_head.chunk_size=4", False),
    ("test.ims_per_batch=2", False),
    ("deploy.threads=1", False),
]
EXPORTED = ["onnxruntime", "openvino"]
PYRAMID = "test.pyramid_scales=[64,96,128]"  # levels near the tiny model's scale (the paper's are 200-1000)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, export folder with the default options): the tiny model, tested on its training images."""
    root = tmp_path_factory.mktemp("matrix")
    data = make_shapes.generate(root / "shapes", seed=1, num_train=12, num_val=2, min_size=64, max_size=96)
    overrides = tiny_training_overrides(data, root / "run", TRAIN_ITERS)
    train_detector(load_config(REPO / "configs" / "demo.yaml", overrides))
    ckpt = root / "run" / "model_final.pth"
    folder = root / "export"
    _tool("export", ["--ckpt", str(ckpt), "--out", str(folder)])
    return ckpt, folder


def _tool(name: str, argv: list[str]) -> None:
    """Run tools/<name>.py's main() in this process, as `detres <verb>` does."""
    module = __import__(f"tools.{'test_det' if name == 'test' else name}", fromlist=["main"])
    saved = sys.argv
    sys.argv = [name, *argv]
    try:
        assert module.main() == 0
    finally:
        sys.argv = saved


def _metrics(tmp_path: Path, source: list[str], *overrides: str) -> dict:
    out = tmp_path / f"m{len(list(tmp_path.iterdir()))}.json"
    _tool("test", [*source, "--out", str(out), *overrides])
    return json.loads(out.read_text())


def _close(ours: dict, reference: dict) -> None:
    for key in ("coco/AP", "coco/AP50"):
        assert abs(ours[key] - reference[key]) <= 0.1, (key, ours[key], reference[key])


@pytest.fixture(scope="module")
def eager(trained, tmp_path_factory):
    """{override or '': eager metrics}, computed once."""
    ckpt, _ = trained
    tmp = tmp_path_factory.mktemp("eager")
    runs = {"": _metrics(tmp, ["--ckpt", str(ckpt)])}
    for override, _ in OPTIONS:
        runs[override] = _metrics(tmp, ["--ckpt", str(ckpt)], override, PYRAMID)
    return runs


def test_the_defaults_agree_on_every_backend_and_source(trained, eager, tmp_path):
    ckpt, folder = trained
    assert eager[""]["coco/AP50"] > 30  # a trained model, so that the options below have something to move
    for backend in EXPORTED:
        _close(_metrics(tmp_path, ["--ckpt", str(ckpt)], f"test.backend={backend}"), eager[""])
        _close(_metrics(tmp_path, ["--model", str(folder)], f"test.backend={backend}"), eager[""])


@pytest.mark.parametrize(("override", "moves"), OPTIONS, ids=[o for o, _ in OPTIONS])
def test_each_option_moves_eager_and_is_computed_or_refused_elsewhere(trained, eager, tmp_path, override, moves):
    ckpt, folder = trained
    key = override.split("=")[0]
    row = option(key)
    if moves:
        assert eager[override] != eager[""], f"{override} changed nothing in eager inference"
    for backend in EXPORTED:
        for source, refused in ((["--ckpt", str(ckpt)], row.graph == REFUSED),
                                (["--model", str(folder)], row.graph in (REFUSED, BAKED))):
            args = (source, override, PYRAMID, f"test.backend={backend}")
            if refused:
                with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
                    _metrics(tmp_path, *args)
            else:
                _close(_metrics(tmp_path, *args), eager[override])
