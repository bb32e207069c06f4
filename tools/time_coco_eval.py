"""Time COCO evaluation with both backends (pycocotools, faster_coco_eval) on a synthetic results file.

    python tools/time_coco_eval.py --images 5000 --repeat 3

The ground truth is synthetic (COCO-like: 80 classes, ~7 objects per image) and the results are its boxes with
noise, dropped objects, wrong classes and boxes on nothing; both backends get the same files. Prints the seconds
of each run and checks that the 12 stats agree.
"""

from __future__ import annotations

import time

import numpy as np

from detres.cli import run_main, tool_parser
from detres.evaluation.coco import STAT_NAMES, evaluate_coco
from detres.evaluation.synthetic_coco import synthetic_coco


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--images", type=int, default=5000, help="synthetic images (default 5000, COCO val's size)")
    parser.add_argument("--classes", type=int, default=80, help="categories (default 80)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend; the best is reported (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic set (default 0)")
    args = parser.parse_args()
    gt, results = synthetic_coco(args.images, args.classes, seed=args.seed)
    print(f"{args.images} images, {len(gt.dataset['annotations'])} objects, {len(results)} detections")
    stats = {}
    for backend in ("pycocotools", "faster_coco_eval"):
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            stats[backend] = evaluate_coco(gt, results, backend=backend)
            times.append(time.perf_counter() - start)
        print(f"{backend:18s} best {min(times):7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)})")
    diff = max(abs(stats["pycocotools"][f"coco/{n}"] - stats["faster_coco_eval"][f"coco/{n}"]) for n in STAT_NAMES)
    print(f"coco/AP {stats['pycocotools']['coco/AP']:.3f}; largest stat difference {np.nan_to_num(diff):.2e} (percent)")
    return 0


if __name__ == "__main__":
    run_main(main)
