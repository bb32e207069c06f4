"""tools/infer.py at scale: reader workers change nothing, a kill -9 resumes to the same result with each image
once, two torchrun processes write the same detections.json as one, and a journal of another run is refused."""

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

from detres.config import config_to_dict, load_config
from detres.data.records import ClassMap
from detres.engine.folder_inference import infer_folder
from detres.engine.infer_journal import JournalWriter, journal_path, path_digest, read_journal
from detres.engine.loading import load_detector
from detres.errors import UserError
from detres.io.checkpoint import save_checkpoint
from detres.modeling.faster_rcnn import build_faster_rcnn

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# a width-8 detector on 32-pixel inputs with few proposals: ~5 ms an image on one core
TINY = ["model.backbone.width=8", "model.rpn.anchor_sizes=[16,32]", "model.rpn.pre_nms_topk_test=50",
        "model.rpn.post_nms_topk_test=10", "data.input.test_scale=32", "data.input.max_size=64"]
N_IMAGES = 160
RESULT_KEYS = ("detections", "failed", "failed_reasons", "outputs")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """An untrained detector checkpoint (its random scores give many detections at --score-thr 0)."""
    cfg = load_config(REPO / "configs" / "demo.yaml", TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    classes = [f"class{i}" for i in range(1, cfg.model.num_classes + 1)]
    save_checkpoint({"model": build_faster_rcnn(cfg).state_dict(), "config": config_to_dict(cfg),
                     "class_map": ClassMap(names=classes, dataset_ids=classes).to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """N_IMAGES small images of varied sizes (some in a subfolder) and one corrupt file."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        h, w = (int(v) for v in rng.integers(20, 60, 2))
        cv2.imwrite(str(folder / ("sub" if i % 7 == 0 else "") / f"img_{i:03d}.png"),
                    rng.integers(0, 255, (h, w, 3), np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def _cmd(ckpt: Path, photos: Path, out: Path, *extra: str, launcher: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *launcher, str(REPO / "tools" / "infer.py"), "--cfg", str(REPO / "configs" / "demo.yaml"),
            "--ckpt", str(ckpt), "--input", str(photos), "--output", str(out), "--score-thr", "0.0", *extra, *TINY,
            "device=cpu"]  # also on a machine with one GPU, where two torchrun ranks would want two


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def _results(out: Path) -> dict:
    report = json.loads((out / "detections.json").read_text())
    return {key: report[key] for key in RESULT_KEYS}


@pytest.fixture(scope="module")
def reference(tiny_ckpt, photos, tmp_path_factory) -> dict:
    """The results of one uninterrupted single-process run of the tool."""
    out = tmp_path_factory.mktemp("reference")
    done = _run(_cmd(tiny_ckpt, photos, out))
    assert done.returncode == 0, done.stderr[-2000:]
    results = _results(out)
    assert len(results["detections"]) == N_IMAGES and results["failed"] == ["broken.jpg"]
    assert sum(len(d) for d in results["detections"].values()) > N_IMAGES  # the comparisons below compare boxes
    return results


def test_reader_workers_give_the_same_detections_and_return_unreadable_files_as_failures(tiny_ckpt, photos,
                                                                                          tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml", TINY)
    model, class_map, _ = load_detector(tiny_ckpt, cfg, optimize=True)
    runs = {}
    for workers in (0, 2):
        report = infer_folder(model, class_map, cfg, torch.device("cpu"), photos, tmp_path / f"w{workers}", 0.0,
                              workers=workers)
        runs[workers] = {key: report[key] for key in RESULT_KEYS}
        assert report["failed"] == ["broken.jpg"] and "truncated" in report["failed_reasons"]["broken.jpg"]
        assert report["memory"]["final_step"] == N_IMAGES + 1 and report["images_per_second"] > 0
    assert runs[0] == runs[2]
    assert len(runs[0]["detections"]) == N_IMAGES
    drawn = {p.name: p.read_bytes() for p in (tmp_path / "w0").glob("*.jpg")}
    assert drawn == {p.name: p.read_bytes() for p in (tmp_path / "w2").glob("*.jpg")} and len(drawn) == N_IMAGES


def test_any_predictor_callable_works_and_boxes_come_back_in_original_pixels(photos, tmp_path):
    """The loop needs only `predictor([tensor]) -> [dict]`: a fake one that puts a box over the whole model input
    must come back as a box over the whole original image (each axis's resize undone), per image."""
    cfg = load_config(REPO / "configs" / "demo.yaml", TINY)
    seen = []

    def predictor(tensors):
        (tensor,) = tensors
        seen.append(tuple(tensor.shape))
        h, w = tensor.shape[-2:]
        return [{"boxes": torch.tensor([[0.0, 0.0, w, h]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([2])}]

    class_map = ClassMap(names=["a", "b", "c"], dataset_ids=[1, 2, 3])
    report = infer_folder(predictor, class_map, cfg, torch.device("cpu"), photos, tmp_path / "out", 0.5,
                          workers=2, draw=False)
    assert len(seen) == N_IMAGES  # the resized input: short side 32 unless the long side would pass 64
    assert all(shape[0] == 3 and (min(shape[1:]) == 32 or max(shape[1:]) == 64) for shape in seen)
    for key, dets in report["detections"].items():
        h, w = cv2.imread(str(photos / key)).shape[:2]
        assert [d["label"] for d in dets] == ["b"]
        # each axis is mapped back by its own ratio (input size / original size), so the whole input is the
        # whole original image, whatever the rounding of the resized sizes
        np.testing.assert_allclose(dets[0]["box"], [0, 0, w, h], atol=1e-3)
    assert report["outputs"] == {} and not list((tmp_path / "out").glob("*.jpg"))  # --no-draw


def _never(tensors):
    raise AssertionError("the model must not run here")


def _journal_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in out.glob("journal-rank*.jsonl"))


def test_resume_after_kill_9_finishes_each_image_once_and_equals_an_uninterrupted_run(tiny_ckpt, photos,
                                                                                        reference, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(_cmd(tiny_ckpt, photos, out), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _journal_lines(out) < 12 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    finished = _journal_lines(out) - 1  # less the header
    assert 10 < finished < N_IMAGES, "the run was not stopped mid-way"
    assert not (out / "detections.json").exists()
    with open(out / "journal-rank0.jsonl", "ab") as journal:  # as if killed inside a write: a torn last line
        journal.write(b'{"image": "img_999.png", "detec')

    resumed = _run(_cmd(tiny_ckpt, photos, out, "--resume", "--workers", "0"))  # other workers: same run
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((out / "detections.json").read_text())
    assert report["resumed_images"] == finished
    assert report["memory"]["final_step"] == N_IMAGES + 1 - finished  # nothing finished was done again
    assert _results(out) == reference  # each image once, none lost, the torn record ignored
    assert not list(out.glob("journal-rank*.jsonl")) and not list(out.glob(".*.tmp"))
    assert sorted(p.name for p in out.iterdir()) == sorted([*reference["outputs"].values(), "detections.json"])

    # a finished run resumes to nothing to do: the model is never called, the report stays the same
    cfg = load_config(REPO / "configs" / "demo.yaml", [*TINY, "device=cpu"])
    report = infer_folder(_never, ClassMap(names=["a"], dataset_ids=[1]), cfg, torch.device("cpu"), photos, out,
                          0.0, resume=True, model_sha256=path_digest(tiny_ckpt))
    assert report["resumed_images"] == N_IMAGES + 1 and report["memory"]["final_step"] == 0
    assert _results(out) == reference


@pytest.mark.slow  # three Python processes (the launcher and two ranks): ~10 s
def test_two_torchrun_processes_write_the_same_detections_json_as_one(tiny_ckpt, photos, reference, tmp_path):
    out = tmp_path / "out"
    launcher = ("-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone")
    done = _run(_cmd(tiny_ckpt, photos, out, launcher=launcher))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "detections.json").read_text())
    assert report["ranks"] == 2  # each rank did its half of the images, none twice
    assert [memory["final_step"] for memory in report["memory_per_rank"]] == [(N_IMAGES + 2) // 2, (N_IMAGES + 1) // 2]
    assert _results(out) == reference
    assert sorted(p.name for p in out.iterdir()) == sorted([*reference["outputs"].values(), "detections.json"])


def test_a_journal_of_another_run_is_refused_with_what_differs(photos, tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml", TINY)
    class_map = ClassMap(names=["a"], dataset_ids=[1])

    def resume(out: Path, cfg=cfg, score_thr: float = 0.5, folder: Path = photos):
        infer_folder(_never, class_map, cfg, torch.device("cpu"), folder, out, score_thr, resume=True,
                     model_sha256="m")

    out = tmp_path / "out"
    out.mkdir()
    # the header that this folder, config and model give, taken from a journal the loop starts
    with pytest.raises(AssertionError, match="must not run"):  # the journal is checked before the model runs
        resume(out)
    header = json.loads((out / "journal-rank0.jsonl").read_bytes().splitlines()[0])
    assert header["images"] == N_IMAGES + 1 and header["score_thr"] == 0.5
    with pytest.raises(UserError, match="--score-thr differs"):
        resume(out, score_thr=0.3)
    with pytest.raises(UserError, match="config"):
        resume(out, cfg=load_config(REPO / "configs" / "demo.yaml", [*TINY, "test.nms_thresh=0.5"]))
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "x.png"), np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(UserError, match="input folder differs"):
        resume(out, folder=other)
    (out / "journal-rank0.jsonl").write_text(json.dumps({**header, "images": 3}) + "\n")
    with pytest.raises(UserError, match=r"number of images in the input folder differs \(3 then"):
        resume(out)
    with pytest.raises(UserError, match="pass --resume"):
        infer_folder(_never, class_map, cfg, torch.device("cpu"), photos, out, 0.5, model_sha256="m")


def test_resume_refuses_a_run_whose_deploy_or_backend_changed_and_names_the_key(photos, tmp_path):
    """What an export made on the fly computes (deploy.precision, the calibration count) and the backend are part of
    the run: `infer --resume` with them changed is refused with the key and both values; deploy.threads, which
    changes no detection, is not. (Before, the header hashed only model, test and data.input: fp32 then int8
    resumed into one detections.json.)"""
    class_map = ClassMap(names=["a"], dataset_ids=[1])

    def resume(*overrides: str):
        infer_folder(_never, class_map, load_config(REPO / "configs" / "demo.yaml", [*TINY, *overrides]),
                     torch.device("cpu"), photos, tmp_path, 0.5, resume=True, model_sha256="m")

    with pytest.raises(AssertionError, match="must not run"):  # writes the journal of the default (auto), torch run
        resume()
    with pytest.raises(UserError, match=r"config .*differs \(deploy.precision: 'auto' then, 'int8' now\)"):
        resume("deploy.precision=int8")
    with pytest.raises(UserError, match=r"deploy.calib_images: 64 then, 8 now"):
        resume("deploy.calib_images=8")
    with pytest.raises(UserError, match=r"test.backend: 'torch' then, 'openvino' now"):
        resume("test.backend=openvino")
    with pytest.raises(UserError, match=r"model.rpn.post_nms_topk_test: 10 then, 20 now"):
        resume("model.rpn.post_nms_topk_test=20")
    with pytest.raises(AssertionError, match="must not run"):  # the same run: it continues (and calls the model)
        resume("deploy.threads=1", "data.num_workers=0")


def test_journal_ignores_and_cuts_a_torn_last_line(tmp_path):
    path, header = journal_path(tmp_path, 0), {"detres_infer_journal": 1, "x": 1}
    with JournalWriter(path, header) as journal:
        journal.append({"image": "a.png", "detections": []})
    with open(path, "ab") as handle:
        handle.write(b'{"image": "b.png", "dete')
    assert [r["image"] for r in read_journal(path, header)] == ["a.png"]
    with JournalWriter(path, header) as journal:  # reopened: the torn line is cut before appending
        journal.append({"image": "c.png", "failed": "unreadable"})
    assert [r["image"] for r in read_journal(path, header)] == ["a.png", "c.png"]
    assert path.read_bytes().count(b"\n") == 3
    path.write_bytes(b'{"detres_inf')  # died inside the header: nothing was finished, the file starts over
    assert list(read_journal(path, header)) == []
    JournalWriter(path, header).close()
    assert json.loads(path.read_bytes()) == header
