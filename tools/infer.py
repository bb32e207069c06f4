"""Detect objects in every image under a folder; write drawn images and one json of all detections.

    python tools/infer.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth --input photos/ --output preds/
    detres infer --ckpt runs/demo/model_final.pth --input photos/ --output preds/ --format csv   # config: the ckpt's
    torchrun --nproc_per_node=4 tools/infer.py ... --resume     # sharded across 4 processes, resumable

The loop lives in detres.engine.folder_inference (see docs/inference.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from detres.cli import add_overrides, add_progress, run_main, tool_parser
from detres.cli.ckpt_config import add_model_source
from detres.distributed import cleanup, init_distributed, resolve_device
from detres.engine.detection_export import export_detections
from detres.engine.folder_inference import infer_folder
from detres.engine.infer_journal import path_digest
from detres.engine.predictor import build_predictor, config_for_predictor
from detres.io.detection_formats import FORMATS
from detres.io.folders import EXTENSIONS, check_folders, find_images, output_names, write_file_atomic  # noqa: F401

log = logging.getLogger("detres.infer")


def main() -> int:
    parser = tool_parser(__doc__)
    add_model_source(parser)
    parser.add_argument("--input", required=True, type=Path, metavar="DIR",
                        help="folder of images, searched recursively (jpg, png, bmp, webp, tif), e.g. photos/")
    parser.add_argument("--output", required=True, type=Path, metavar="DIR",
                        help="folder for the drawn images and detections.json, outside --input, e.g. preds/")
    parser.add_argument("--score-thr", type=float, default=0.5, metavar="SCORE",
                        help="draw and report detections with at least this score, e.g. 0.3")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes that read and resize images while the model runs; 0 reads them in this "
                             "process (default: the config's data.num_workers; example: --workers 4)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a stopped run in the same --output from its journal, skipping the images "
                             "it finished (default: off; an --output holding a journal is refused without it)")
    parser.add_argument("--no-draw", action="store_true",
                        help="write only detections.json, no drawn images (default: draw every image)")
    parser.add_argument("--format", choices=FORMATS, default="json",
                        help="results besides the drawn images: json: detections.json, detres's report (always "
                             "written); coco: also detections_coco.json, a COCO results list that pycocotools and "
                             "`detres eval` read (image ids from --gt, else 1..N in sorted file order, listed in "
                             "detections_coco_images.json); csv: also detections.csv, one row per detection (image, "
                             "class, score, x1, y1, x2, y2); voc: also voc/Annotations/*.xml, one VOC xml per image "
                             "that labelImg and CVAT open as pre-annotations; labelstudio: also "
                             "detections_labelstudio.json, Label Studio tasks whose predictions (boxes in percent "
                             "of the image, model_version the --ckpt/--model name) it imports as pre-annotations")
    parser.add_argument("--gt", type=Path, metavar="JSON",
                        help="with --format coco, when --input is a COCO dataset's image folder: its annotation "
                             "file, e.g. datasets/shapes/coco/annotations/instances_val.json, whose image ids the "
                             "results use (default: none, ids 1..N in sorted file order)")
    parser.add_argument("--tile", type=int, default=None, metavar="PIXELS",
                        help="cut each image into tiles of this many original pixels, detected at the training "
                             "scale and merged (sets test.tile_size; default: the config's, 0 = whole image); "
                             "for example --tile 800")
    parser.add_argument("--tile-overlap", type=float, default=None, metavar="F",
                        help="fraction of the tile side that neighbouring tiles share (sets test.tile_overlap; "
                             "default: the config's, 0.25); for example --tile-overlap 0.3")
    add_overrides(parser)
    add_progress(parser)
    args = parser.parse_args()
    if args.gt is not None and args.format != "coco":
        parser.error("--gt goes with --format coco")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_folders(args.input, args.output)
    ckpts = [args.ckpt] if args.ckpt else []
    cfg = config_for_predictor(args.cfg, ckpts=ckpts, model_dir=args.model, overrides=args.overrides)
    if args.tile is not None:
        cfg.test.tile_size = args.tile
    if args.tile_overlap is not None:
        cfg.test.tile_overlap = args.tile_overlap
    workers = cfg.data.num_workers if args.workers is None else args.workers
    if workers < 0:
        parser.error(f"--workers must be 0 or more, got {workers}")
    device = resolve_device(cfg.device)
    init_distributed(device)
    try:
        model = build_predictor(cfg, ckpts=ckpts, model_dir=args.model, device=device)
        report = infer_folder(model, model.class_map, cfg, device, args.input, args.output, args.score_thr,
                              workers=workers, resume=args.resume, draw=not args.no_draw,
                              model_sha256=path_digest(args.ckpt or args.model))
    finally:
        cleanup()
    if report is None:  # another rank of a torchrun job: rank 0 reports
        return 0
    for path in export_detections(report, args.format, args.output, input_dir=args.input,
                                  class_map=model.class_map, gt=args.gt,
                                  model_name=Path(args.ckpt or args.model).name):
        print(f"wrote {path}")
    memory = report["memory"]
    growth = "" if memory["growth_percent"] is None else (
        f"{memory['baseline_rss_mib']} MiB after {memory['baseline_step']} images, {memory['final_rss_mib']} MiB "
        f"after {memory['final_step']} images ({memory['growth_percent']:+.1f}%), ")
    print(f"{len(report['detections'])} images in {report['seconds']:.1f}s ({report['images_per_second']:.2f} "
          f"images/s, {report['ranks']} process(es), {workers} reader worker(s) each; {report['resumed_images']} "
          f"done by an earlier run), {len(report['failed'])} unreadable skipped; memory {growth}peak "
          f"{memory['peak_rss_mib']} MiB; results in {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
