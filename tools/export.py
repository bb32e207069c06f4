"""Export a trained detector for ONNX Runtime / OpenVINO, with an int8 model on request.

The test-time options the graph bakes in (score threshold, NMS, proposal counts: docs/deploy.md's options table)
take this run's values, overrides included, and the folder records them.

    python tools/export.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth --format onnx --out runs/demo/export
    python tools/export.py --cfg configs/demo.yaml --ckpt runs/demo/model_final.pth --out runs/demo/export \
        --int8 --calib 64
    python tools/export.py --ckpt runs/demo/model_final.pth --out runs/demo/export_ort --int8 \
        deploy.int8_quantizer=onnxruntime

With --int8 the calibration images are training images. Each int8 attempt is measured (fp32 and int8 mAP@.5 and
mAP@[.5,.95], in the quantizer's runtime) on up to deploy.int8_measure_images (100) images of the test split, or on
the calibration images when it has no boxes; the quantizer's recipes are tried in order (as is, output layers
float, NNCF as ONNX Runtime quantizes, NNCF's accuracy control) until one keeps the bound, and every attempt is
recorded in detres_export.json (`int8`): docs/deploy.md.
"""

from __future__ import annotations

import logging
import time

from detres.cli import add_overrides, run_main, tool_parser
from detres.cli.ckpt_config import add_cfg_from_ckpt, config_for_checkpoint
from detres.deploy.artifact import FORMATS
from detres.deploy.export import export_detector
from detres.deploy.int8_data import int8_data
from detres.engine.loading import load_detector


def main() -> int:
    parser = tool_parser(__doc__)
    add_cfg_from_ckpt(parser)
    parser.add_argument("--ckpt", required=True, help="detection checkpoint, e.g. runs/demo/model_final.pth")
    parser.add_argument("--format", default="onnx", choices=sorted(FORMATS),
                        help="onnx (the default and only format: ONNX Runtime and OpenVINO run it; torch.export's .pt2 "
                             "is not offered, docs/deploy.md says why)")
    parser.add_argument("--out", required=True, help="output folder, e.g. runs/demo/export (created; the json goes "
                        "in last)")
    parser.add_argument("--int8", action="store_true", help="also write an int8 model by deploy.int8_quantizer: "
                        "auto (both tools' recipes, NNCF's first), nncf (OpenVINO IR, OpenVINO runs it) or "
                        "onnxruntime (quantize_static, QDQ ONNX: ONNX Runtime and OpenVINO run it); measures fp32 "
                        "and int8 mAP on up to deploy.int8_measure_images (100) images of the test split (else on "
                        "the calibration images) and tries the quantizer's recipes until one loses at most 0.5 "
                        "mAP@.5 and 1.0 mAP@[.5,.95] (deploy.int8_search=false: only the first); default off")
    parser.add_argument("--calib", type=int, default=None, help="training images that calibrate --int8; default "
                        "deploy.calib_images (64), e.g. --calib 128")
    add_overrides(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_for_checkpoint(args.cfg, args.ckpt, args.overrides)
    tic = time.perf_counter()
    model, class_map, stored = load_detector(args.ckpt, cfg)
    # the checkpoint's architecture, this run's test-time and export settings (load_detector)
    data = None
    if args.int8:
        calib = cfg.deploy.calib_images if args.calib is None else args.calib
        data = int8_data(stored, calib, cfg.deploy.int8_measure_images)
    out = export_detector(model, stored, class_map, args.out, fmt=args.format,
                          calibration=data.calibration if data else None, measure=data.measure if data else None)
    print(f"exported {args.format}{' + int8' if args.int8 else ''} to {out} in {time.perf_counter() - tic:.1f}s")
    return 0


if __name__ == "__main__":
    run_main(main)
