"""Train a config for N iterations and report whether resident memory grows (a leak check for long runs).

    python tools/soak_memory.py --cfg configs/demo.yaml [--iterations 300] [--baseline 50] [KEY=VALUE ...]

Prints the RSS after the baseline iteration and after the last one, and their ratio; exits 1 when the growth
exceeds --max-growth (10% by default). The run goes to a temporary folder unless --output is given.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from detres.cli import add_overrides, run_main, tool_parser
from detres.config import load_config
from detres.engine.soak import soak_memory


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, metavar="YAML", help="YAML config file, e.g. configs/demo.yaml")
    parser.add_argument("--iterations", type=int, default=300, metavar="N", help="iterations to train")
    parser.add_argument("--baseline", type=int, default=50, metavar="N", help="iteration whose RSS is the reference")
    parser.add_argument("--max-growth", type=float, default=0.10, metavar="FRACTION",
                        help="allowed final/baseline - 1, e.g. 0.10 for 10%%")
    parser.add_argument("--output", type=Path, default=None, metavar="DIR",
                        help="keep the run here, e.g. runs/soak (default: a temporary folder, deleted)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the measurements to this json file, e.g. soak.json (default: none)")
    add_overrides(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = soak_memory(load_config(args.cfg, args.overrides), iterations=args.iterations,
                         baseline=args.baseline, output_dir=args.output)
    trace = result.trace
    print(f"RSS at iteration {trace.baseline_step}: {trace.baseline_mib:.1f} MiB")
    print(f"RSS at iteration {trace.final_step}: {trace.final_mib:.1f} MiB")
    print(f"ratio {result.ratio:.3f} (limit {1 + args.max_growth:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"iterations": result.iterations, **trace.report(),
                                         "ratio": round(result.ratio, 4)}, indent=1))
    return 0 if result.ratio <= 1 + args.max_growth else 1


if __name__ == "__main__":
    run_main(main)
