"""The report end to end: report.json's keys and numbers, the page in headless Chromium, a results file from
torchvision's peer, the analyze_det tool and the dataset browser."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from analysis_helpers import REPO, noisy_results, shapes_val
from chromium_cdp import INSTALL_HINT, Browser, find_chromium

from detres.analysis.browse import browse, unnormalize
from detres.analysis.report import analyze
from detres.config import load_config
from detres.data.coco import read_coco
from detres.data.image_io import read_image_rgb
from detres.data.transforms import normalize_to_tensor
from detres.errors import UserError
from detres.evaluation.coco import category_ids, coco_from_records, evaluate_coco


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    ann, images = shapes_val(root / "shapes")
    records, class_map = read_coco(ann, images)
    results = noisy_results(json.loads(ann.read_text()))
    (root / "dets.json").write_text(json.dumps(results))
    rep = analyze(records, class_map, results, root / "report", coco_gt_file=str(ann), worst_k=4)
    return root, ann, images, records, class_map, results, rep


def test_report_json_has_the_flat_keys_and_the_evaluator_numbers(run):
    root, ann, _, records, class_map, results, rep = run
    assert json.loads((root / "report" / "report.json").read_text()) == rep
    for kind in ("cls", "loc", "both", "dupe", "bkg", "miss"):
        assert isinstance(rep[f"errors/{kind}"], float) and rep[f"errors/{kind}"] >= 0
    assert rep["errors/cls"] > 0 and rep["errors/loc"] > 0 and rep["errors/miss"] > 0  # the noise makes them
    for name in class_map.names:
        assert 0 < rep[f"pr/{name}/best_f1_thresh"] <= 1
    assert rep["confusion/classes"] == [*class_map.names, "background"]
    matrix = np.array(rep["confusion/matrix"])
    assert matrix.shape == (7, 7) and matrix[-1, -1] == 0
    coco = evaluate_coco(coco_from_records(records, class_map), results)
    assert rep["coco/AP"] == pytest.approx(coco["coco/AP"], abs=1e-9)
    assert rep["errors/base_AP50"] == pytest.approx(coco["coco/AP50"], abs=1e-9)
    per_class = [rep[f"class/{n}/AP50"] for n in class_map.names]
    assert np.mean(per_class) == pytest.approx(rep["coco/AP50"], abs=1e-9)
    assert len(rep["worst/images"]) == 4


def test_page_is_self_contained(run):
    root = run[0]
    text = (root / "report" / "index.html").read_text()
    assert "http://" not in text and "https://" not in text and "@import" not in text
    for section in ("summary", "classes", "pr", "threshold", "coco-errors", "tide", "confusion", "bins", "worst"):
        assert f'id="{section}"' in text
    assert text.index('id="summary"') < text.index('id="classes"') < text.index('id="pr"') < text.index('id="worst"')
    assert (root / "report" / "figures" / "pr_all.svg").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".report.")]  # no temporary folder left


def test_page_in_headless_chromium(run):
    binary = find_chromium()
    if binary is None:
        pytest.skip(INSTALL_HINT)
    root, *_, class_map, _, _ = run
    browser = Browser(binary)
    try:
        browser.open((root / "report" / "index.html").as_uri())
        browser.evaluate("new Promise(r => window.requestAnimationFrame(() => r(1)))")
        images = browser.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
                                  "i.naturalWidth])")
        rows = browser.evaluate("document.querySelectorAll('#per-class tbody tr').length")
        browser.evaluate("document.querySelector('#per-class th:nth-child(2)').click()")  # sort by AP
        sorted_ap = browser.evaluate("Array.from(document.querySelectorAll('#per-class tbody tr td:nth-child(2)'))"
                                     ".map(td => parseFloat(td.textContent))")
        shot = browser.screenshot()
        errors = browser.errors()
    finally:
        browser.close()
    assert len(images) > 20
    assert all(complete and width > 0 for _, complete, width in images), [s for s, c, w in images if not w]
    assert errors == []
    assert rows == len(class_map.names)
    assert sorted_ap == sorted(sorted_ap)
    import cv2

    pixels = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape[:2] == (900, 1280)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text and tables drawn, not a blank page


def test_report_accepts_results_of_torchvision_peer(run, tmp_path):
    from detres.modeling.faster_rcnn import build_faster_rcnn
    from detres.perf.bench import calibrate_benchmark_model
    from detres.perf.peer import build_peer

    _, ann, _, records, class_map, _, _ = run
    cfg = load_config(None, ["model.backbone.depth=18", "model.backbone.width=8", "model.num_classes=6",
                             "model.rpn.post_nms_topk_test=50", "model.rpn.pre_nms_topk_test=300"])
    model = build_faster_rcnn(cfg)
    mean, std = cfg.model.backbone.pixel_mean, cfg.model.backbone.pixel_std
    images = [normalize_to_tensor(read_image_rgb(r.image_path), mean, std) for r in records[:4]]
    calibrate_benchmark_model(model, images[:2])
    peer = build_peer(model.eval(), cfg).eval()
    with torch.inference_mode():
        outputs = peer(images)
    cats = category_ids(class_map)
    results = [{"image_id": rec.image_id, "category_id": cats[int(lab) - 1], "score": float(s),
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
               for rec, out in zip(records, outputs)
               for (x1, y1, x2, y2), s, lab in zip(out["boxes"].tolist(), out["scores"], out["labels"])]
    assert results  # calibration makes the random-weight peer detect something
    path = tmp_path / "peer.json"
    path.write_text(json.dumps(results))
    cmd = [sys.executable, str(REPO / "tools/analyze_det.py"), "--gt", str(ann), "--image-dir",
           str(ann.parents[1] / "val"), "--results", str(path), "--out", str(tmp_path / "peer_report"), "--worst", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "peer_report" / "report.json").read_text())
    assert rep["num_detections"] == len(results)
    assert rep["errors/count/bkg"] + rep["errors/count/loc"] + rep["errors/count/cls"] > 0


def test_analyze_det_names_a_bad_results_file_and_keeps_other_folders(run, tmp_path):
    root, ann, *_ = run
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    cmd = [sys.executable, str(REPO / "tools/analyze_det.py"), "--gt", str(ann), "--results", str(bad), "--out",
           str(tmp_path / "r")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"},
                          timeout=120)
    assert proc.returncode != 0 and "entry 0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a report folder"):
        analyze(run[3], run[4], run[5], other)
    assert (other / "notes.txt").exists()


def test_browser_page_draws_stored_and_augmented_ground_truth(run, tmp_path):
    from detres.data.detection import build_detection_dataset

    _, ann, images, records, class_map, _, _ = run
    records[0].ignore[:] = True  # marked boxes are drawn and counted apart
    out = browse(tmp_path / "b", records=records, class_map=class_map, max_images=3, ignored_word="ignored",
                 title="t")
    assert len(list((out / "images").iterdir())) == 3
    assert "(ignored)</td><td>" + str(len(records[0].ignore)) in (out / "index.html").read_text()
    cfg = load_config(None, ["data.train.format=coco", f"data.train.ann_file={ann}", f"data.train.image_dir={images}",
                             "data.input.train_scales=[200]"])
    ds = build_detection_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=cfg.model.backbone.pixel_mean,
                                 pixel_std=cfg.model.backbone.pixel_std, train=True)
    aug = browse(tmp_path / "a", dataset=ds, class_map=ds.class_map, max_images=2, ignored_word="ignored",
                 title="t", pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std)
    assert len(list((aug / "images").iterdir())) == 2
    rgb = read_image_rgb(records[1].image_path)
    mean, std = cfg.model.backbone.pixel_mean, cfg.model.backbone.pixel_std
    assert np.abs(unnormalize(normalize_to_tensor(rgb, mean, std), mean, std).astype(int) - rgb).max() <= 1
