"""`data.generate_demo` is honoured wherever a dataset is read from a config (detres.data.detection.read_split and
build_split), so the demo configs run on a fresh checkout; a missing real dataset gets a message that says where it
was looked for and how to get it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detres.config import load_config
from detres.data.demo_data import demo_root
from detres.engine.trainer import build_datasets

REPO = Path(__file__).resolve().parents[1]


def _tool(verb: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "detres", verb, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_demo_configs_generate_their_set_where_training_reads_it(tmp_path, monkeypatch):
    """A folder with no datasets/ (a fresh checkout, or a run from elsewhere): the training datasets of
    configs/demo.yaml and configs/aerial_demo.yaml (which has data.augment) are built after the shapes are generated
    into datasets/shapes, the make_shapes.py layout (500 train images with boxes less the empty ones, 100 val)."""
    monkeypatch.chdir(tmp_path)
    for name in ("demo.yaml", "aerial_demo.yaml"):
        train, test = build_datasets(load_config(REPO / "configs" / name, ["data.num_workers=0"]))
        assert (tmp_path / "datasets" / "shapes" / "coco" / "annotations" / "instances_train.json").is_file()
        assert 400 < len(train) < 500 and len(test) == 100
        assert train.class_map.names == ["circle", "square", "triangle", "star", "cross", "ring"]
        image, target, _ = train[0]
        assert image.shape[0] == 3 and target["boxes"].shape[1] == 4
    assert not list((tmp_path / "datasets").glob(".*partial*"))  # the temporary folder was renamed into place


def test_every_split_of_the_demo_layout_maps_to_the_script_root():
    """The folder the script writes, for each format a demo config may point at."""
    from detres.config import DatasetConfig

    coco = DatasetConfig(format="coco", ann_file="datasets/shapes/coco/annotations/instances_val.json")
    voc = DatasetConfig(format="voc", root="datasets/shapes/VOCdevkit", sets=["2007:train"])
    cls = DatasetConfig(format="imagenet_cls", root="datasets/shapes_cls", split="train")
    assert [demo_root(d) for d in (coco, voc, cls)] == [Path("datasets/shapes")] * 2 + [Path("datasets/shapes_cls")]


@pytest.mark.slow
def test_stats_and_browse_generate_the_demo_set_and_a_missing_real_set_says_where(tmp_path):
    """Through the command line from an empty folder: `detres stats --cfg configs/demo.yaml` generates the set and
    counts it; `detres browse` reads it; `detres stats` on COCO's config fails with one message (no traceback) naming
    the file it looked for, the folder it looked from and datasets/README.md's section."""
    stats = _tool("stats", "--cfg", str(REPO / "configs" / "demo.yaml"), "--out", "stats", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert (tmp_path / "datasets" / "shapes" / "VOCdevkit").is_dir()
    browse = _tool("browse", "--cfg", str(REPO / "configs" / "aerial_demo.yaml"), "--split", "test", "--max-images",
                   "2", "--out", "browse", cwd=tmp_path)
    assert browse.returncode == 0, browse.stderr
    assert (tmp_path / "browse" / "index.html").is_file()
    missing = _tool("stats", "--cfg", str(REPO / "configs" / "coco_r101.yaml"), cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "data.train.ann_file=datasets/coco/annotations/instances_train2017.json does not exist" in missing.stderr
    assert str(tmp_path) in missing.stderr and "datasets/README.md" in missing.stderr
    assert "Getting the data" in missing.stderr
