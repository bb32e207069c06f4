"""The evaluation report: every analysis of one results file against its ground truth, as report.json (flat keys,
AP values in percent) and one self-contained index.html with its figures and images."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from detres.analysis import coco_errors, plots, tide
from detres.analysis.breakdown import ASPECT_HELP, ap_by_aspect, ap_by_size
from detres.analysis.cocoeval_runs import FlaggedCOCOeval, detections_coco
from detres.analysis.confusion import confusion_matrix
from detres.analysis.html_page import esc, figures, page, table, write_site
from detres.analysis.pr import matches_of, pr_curve, score_curve
from detres.analysis.worst_images import DET_COLOURS, GT_COLOURS, draw_pair, image_losses, write_pair
from detres.data.records import ClassMap, DetRecord
from detres.errors import DataError
from detres.evaluation.coco import STAT_NAMES, category_ids, coco_from_records
from detres.evaluation.voc import evaluate_voc

MAX_CURVE_POINTS = 200  # score curves in report.json are subsampled to this many points


def _clean(value):
    """JSON-safe: NaN/inf -> null, numpy -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _subsample(x: np.ndarray) -> np.ndarray:
    return x if len(x) <= MAX_CURVE_POINTS else x[np.linspace(0, len(x) - 1, MAX_CURVE_POINTS).astype(int)]


def _detections_by_label(results: list[dict], label_of: dict[int, int]) -> dict[int, dict]:
    """COCO results -> {image_id: dict(boxes XYXY, scores, labels 1..C)} as detres's VOC evaluation takes them."""
    rows: dict[int, list] = {}
    for r in results:
        x, y, w, h = r["bbox"]
        rows.setdefault(r["image_id"], []).append((x, y, x + w, y + h, r["score"], label_of[r["category_id"]]))
    return {k: {"boxes": np.array([v[:4] for v in vs], np.float32), "scores": np.array([v[4] for v in vs]),
                "labels": np.array([v[5] for v in vs], np.int64)} for k, vs in rows.items()}


def analyze(records: list[DetRecord], class_map: ClassMap, results: list[dict], out_dir: str | Path, *,
            coco_gt_file: str | None = None, iou_thresh: float = 0.5, score_thresh: float | None = None,
            worst_k: int = 8, title: str = "detres evaluation report") -> dict:
    """Write the report folder `out_dir` (atomically) and return report.json's dict.

    records/class_map: the ground truth as detres reads it (images, VOC difficult flags); coco_gt_file: the COCO
    json when there is one (its areas and supercategories are used, as by tools/eval_det.py). results: a COCO
    results list. iou_thresh / score_thresh: the confusion matrix's (score_thresh None: the best-F1 threshold);
    worst_k: how many worst images to draw.
    """
    if coco_gt_file:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(coco_gt_file))
    else:
        gt = coco_from_records(records, class_map)
    cats = category_ids(class_map)
    names = dict(zip(cats, class_map.names))
    label_of = {c: i + 1 for i, c in enumerate(cats)}
    dt = detections_coco(gt, results)
    ev = FlaggedCOCOeval(gt, dt, iouType="bbox")
    ev.params.catIds = cats
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    rep: dict = {f"coco/{n}": 100.0 * v if v >= 0 else float("nan") for n, v in zip(STAT_NAMES, ev.stats)}
    detections = _detections_by_label(results, label_of)
    for use_07 in (True, False):
        rep.update(evaluate_voc(records, detections, class_map.names, use_07=use_07))
    rep["num_images"], rep["num_detections"] = len(gt.getImgIds()), len(results)
    rep["num_objects"] = sum(1 for a in gt.dataset["annotations"] if not a.get("iscrowd", 0))
    rep["classes"] = list(class_map.names)

    # per-class AP table from the main run: precision [T, R, K, A, M], areas all/small/medium/large
    precision = ev.eval["precision"][..., -1]
    columns = {"AP": (slice(None), 0), "AP50": (0, 0), "AP75": (5, 0), "APs": (slice(None), 1),
               "APm": (slice(None), 2), "APl": (slice(None), 3)}
    for k, name in enumerate(class_map.names):
        for col, (t, a) in columns.items():
            p = precision[t, :, k, a]
            rep[f"class/{name}/{col}"] = 100.0 * float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        rep[f"class/{name}/VOC07"] = rep[f"voc07/AP/{name}"]
        rep[f"class/{name}/VOC12"] = rep[f"voc/AP/{name}"]
        rep[f"class/{name}/num_gt"] = sum(1 for a in gt.dataset["annotations"]
                                          if a["category_id"] == cats[k] and not a.get("iscrowd", 0))

    # PR curves at IoU .5 and .75 (COCOeval's interpolated precision at 101 recalls) and score-threshold curves
    rep["pr/recall_points"] = list(plots.RECALLS)
    m = matches_of(ev, 0)
    keys = [("all", None, None)] + [(name, k, cats[k]) for k, name in enumerate(class_map.names)]
    for name, k, cat in keys:
        for iou in (0.5, 0.75):
            rep[f"pr/{name}/iou{round(iou * 100)}/precision"] = list(pr_curve(ev, iou=iou, k=k))
        curve = score_curve(m, cat)
        rep.update({f"pr/{name}/{key}": v for key, v in curve.best().items()})
        for key in ("thresholds", "precision", "recall", "f1"):
            rep[f"pr/{name}/score_curve/{key}"] = list(_subsample(getattr(curve, key)))

    # classic COCO analysis and TIDE-style attribution
    hoiem = coco_errors.hoiem_curves(gt, results)
    hoiem_all = coco_errors.mean_curves(hoiem)
    for kind, area in coco_errors.curve_areas(hoiem_all).items():
        rep[f"coco_errors/all/{kind}"] = 100.0 * area
    for cat, curves in hoiem.items():
        for kind, area in coco_errors.curve_areas(curves).items():
            rep[f"coco_errors/{names[cat]}/{kind}"] = 100.0 * area
    attribution = tide.attribute_errors(gt, results, m)
    dap = tide.error_dap(gt, results, attribution)
    rep["errors/base_AP50"] = dap.pop("base")
    rep.update({f"errors/{kind}": v for kind, v in dap.items()})
    rep.update({f"errors/count/{kind}": v for kind, v in attribution.counts().items()})

    thresh = score_thresh if score_thresh is not None else rep["pr/all/best_f1_thresh"]
    thresh = 0.5 if thresh is None or not math.isfinite(thresh) else float(thresh)
    rep["confusion/classes"] = [*class_map.names, "background"]
    rep["confusion/iou_thresh"], rep["confusion/score_thresh"] = iou_thresh, thresh
    matrix = confusion_matrix(gt, results, iou_thresh=iou_thresh, score_thresh=thresh)
    rep["confusion/matrix"] = matrix.tolist()
    size, aspect = ap_by_size(ev), ap_by_aspect(gt, results)
    for family, bins in (("size", size), ("aspect", aspect)):
        for bin_name, vals in bins.items():
            rep.update({f"{family}/{bin_name}/{key}": v for key, v in vals.items()})
    losses = image_losses(gt, results, attribution, thresh)
    worst = sorted((i for i in losses if losses[i]["loss"] > 0), key=lambda i: (-losses[i]["loss"], i))[:worst_k]
    rep["worst/score_thresh"] = thresh
    rep["worst/images"] = [{"image_id": i, **losses[i]} for i in worst]
    paths = {r.image_id: r.image_path for r in records}

    def build(tmp: Path) -> str:
        (tmp / "figures").mkdir()
        (tmp / "images").mkdir()
        return _page(tmp, rep, hoiem_all, hoiem, names, matrix, size, aspect, title,
                     lambda i: draw_pair(paths[i], i, gt, results, attribution, thresh, names))

    clean = _clean(rep)
    write_site(out_dir, lambda tmp: (tmp.joinpath("report.json").write_text(json.dumps(clean, indent=1)),
                                     build(tmp))[1])
    return clean


def _page(tmp: Path, rep: dict, hoiem_all, hoiem, names, matrix, size, aspect, title, draw) -> str:
    """Draw every figure and image into tmp and return the page's html."""
    figs = tmp / "figures"
    classes = rep["classes"]
    summary_rows = [[k, rep[k]] for k in ("coco/AP", "coco/AP50", "coco/AP75", "coco/APs", "coco/APm", "coco/APl",
                                           "voc07/mAP", "voc/mAP")]
    summary_rows += [["best-F1 score threshold (all classes)", rep["pr/all/best_f1_thresh"]],
                     ["F1 / precision / recall there",
                      " / ".join(f"{rep[f'pr/all/{k}']:.3f}" if rep[f"pr/all/{k}"] == rep[f"pr/all/{k}"] else "n/a"
                                 for k in ("best_f1", "precision_at_best", "recall_at_best"))],
                     ["images / objects / detections",
                      f"{rep['num_images']} / {rep['num_objects']} / {rep['num_detections']}"]]
    err_rows = [[kind, rep[f"errors/{kind}"], rep[f"errors/count/{kind}"]] for kind in tide.ERROR_TYPES]
    summary = ('<div class="figs"><div>' + table(["metric", "value"], summary_rows, table_id="summary", digits=3)
               + "<p class='note'>AP in percent (COCO: IoU .50:.95 unless named; VOC07: 11-point at IoU .5; "
               "VOC12: all-point).</p></div><div><b>Where the AP50 goes (TIDE-style dAP)</b>"
               + table(["error", "dAP50 (AP points)", "count"], err_rows, table_id="errors", digits=2)
               + "</div></div>")
    cols = ["AP", "AP50", "AP75", "APs", "APm", "APl", "VOC07", "VOC12", "num_gt"]
    class_rows = [[name, *[rep[f"class/{name}/{c}"] for c in cols]] for name in classes]
    per_class = ("<p>Click a column header to sort.</p>"
                 + table(["class", *cols], class_rows, table_id="per-class"))

    pr_items = [(f"figures/{plots.pr_curves({'IoU 0.5': np.array(rep['pr/all/iou50/precision'], float), 'IoU 0.75': np.array(rep['pr/all/iou75/precision'], float)}, 'PR curve, all classes (mean)', figs, 'pr_all')}", "all classes")]  # noqa: E501
    score_items = []
    for i, name in enumerate(["all", *classes]):
        if name != "all":
            curves = {"IoU 0.5": np.array(rep[f"pr/{name}/iou50/precision"], float),
                      "IoU 0.75": np.array(rep[f"pr/{name}/iou75/precision"], float)}
            pr_items.append((f"figures/{plots.pr_curves(curves, f'PR curve, {name}', figs, f'pr_{i}')}", name))
        c = {k: np.array(rep[f"pr/{name}/score_curve/{k}"], float) for k in ("thresholds", "precision", "recall",
                                                                              "f1")}
        best = rep[f"pr/{name}/best_f1_thresh"]
        best = float("nan") if best is None or best != best else best
        png = plots.score_curves(c["thresholds"], c["precision"], c["recall"], c["f1"], best,
                                 f"Precision, recall, F1 vs score, {name} (IoU 0.5)", figs, f"score_{i}")
        score_items.append((f"figures/{png}", f"{name}: best F1 at score {best:.3f}"))
    hoiem_items = [(f"figures/{plots.hoiem_areas(hoiem_all, 'COCO error analysis, all classes', figs, 'hoiem_all')}",
                    "all classes")]
    for i, (cat, curves) in enumerate(hoiem.items()):
        if not np.isnan(curves).all():
            png = plots.hoiem_areas(curves, f"COCO error analysis, {names[cat]}", figs, f"hoiem_{i}")
            hoiem_items.append((f"figures/{png}", names[cat]))
    tide_png = plots.bars({k: rep[f"errors/{k}"] for k in tide.ERROR_TYPES}, "AP50 gained by fixing each error type",
                          "dAP50 (AP points)", figs, "tide", xlabel="error type")
    definitions = "".join(f"<li>{esc(line.lstrip('# '))}</li>" for line in _tide_rules())
    conf_png = plots.confusion(matrix, rep["confusion/classes"],
                               f"Confusion at IoU {rep['confusion/iou_thresh']:.2f}, "
                               f"score >= {rep['confusion/score_thresh']:.3f}", figs, "confusion")
    size_png = plots.bars({k: v["AP"] for k, v in size.items()}, "AP by object size (COCO areas)",
                          "AP (percent)", figs, "ap_size", xlabel="object area (px²): <32², 32²-96², >96²")
    aspect_png = plots.bars({k: v["AP"] for k, v in aspect.items()}, "AP by aspect ratio", "AP (percent)", figs,
                            "ap_aspect", xlabel=ASPECT_HELP)
    bins_rows = [[f"size: {k}", v["AP"], v["AP50"], v["num_gt"]] for k, v in size.items()]
    bins_rows += [[f"aspect: {k}", v["AP"], v["AP50"], v["num_gt"]] for k, v in aspect.items()]
    worst_html = []
    for rank, w in enumerate(rep["worst/images"]):
        name = f"images/worst_{rank:02d}_{w['image_id']}.jpg"
        try:
            write_pair(tmp / name, draw(w["image_id"]))
        except DataError as exc:  # the images are optional for an analysis: say which is missing, draw the rest
            worst_html.append(f"<p>#{rank + 1}: image {w['image_id']}: not drawn ({esc(exc)})</p>")
            continue
        worst_html.append(f'<div class="pair"><p>#{rank + 1}: image {w["image_id"]}: {w["fp"]} false positives, '
                          f'{w["fn"]} missed</p><img src="{esc(name)}" alt="image {w["image_id"]}"></div>')
    legend = "".join(f'<span style="border:2px solid rgb{c}">{esc(k)}</span>' for k, c in DET_COLOURS.items())
    legend_gt = "".join(f'<span style="border:2px solid rgb{c}">{esc(k)}</span>' for k, c in GT_COLOURS.items())
    sections = [
        ("summary", "Summary", summary),
        ("classes", "Per-class AP", per_class),
        ("pr", "PR curves (IoU 0.5 and 0.75)", figures(pr_items)),
        ("threshold", "Precision, recall and F1 against the score threshold", figures(score_items)),
        ("coco-errors", "COCO error analysis (Hoiem)",
         "<p class='note'>C75/C50: PR at IoU .75/.5; Loc: at IoU .1; Sim: supercategory confusions removed; "
         "Oth: all class confusions removed; BG: background false positives removed; FN: the rest (missed).</p>"
         + figures(hoiem_items)),
        ("tide", "Error attribution (TIDE-style, IoU fg 0.5 / bg 0.1)",
         f"<ul class='note'>{definitions}</ul>" + figures([(f"figures/{tide_png}", "dAP50 per error type")])),
        ("confusion", "Confusion matrix", figures([(f"figures/{conf_png}", "rows: true class, columns: predicted")])),
        ("bins", "AP by object size and aspect ratio",
         figures([(f"figures/{size_png}", "by size"), (f"figures/{aspect_png}", "by aspect ratio")])
         + table(["bin", "AP", "AP50", "objects"], bins_rows, table_id="bins")),
        ("worst", "Worst images",
         f"<p class='note'>Left: ground truth ({legend_gt}). Right: detections scoring >= "
         f"{rep['worst/score_thresh']:.3f} ({legend}).</p>" + ("".join(worst_html) or "<p>No image has errors.</p>")),
    ]
    return page(title, sections)


def _tide_rules() -> list[str]:
    """The one-line definitions of the error types, as written in detres/analysis/tide.py."""
    lines = Path(tide.__file__).read_text().splitlines()
    return [line for line in lines if line.startswith("# ") and line[2:].split(":")[0] in tide.ERROR_TYPES]
