"""Print a ResNet's parameters and multiply-adds at 224x224 next to the paper's Table 1 figures.

    python tools/model_info.py                 # all depths, original (MSRA) layout as the paper counted
    python tools/model_info.py --depth 50 --torchvision-layout
"""

from __future__ import annotations

import torch

from detres.cli import run_main, tool_parser
from detres.modeling import resnet as R
from detres.modeling.complexity import count_parameters, multiply_adds

PAPER_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}  # Table 1, multiply-adds at 224x224


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--depth", type=int, action="append", choices=sorted(PAPER_GMACS),
                        help="ResNet depth; repeat for several, e.g. --depth 50 --depth 101 (default: all five)")
    parser.add_argument("--size", type=int, default=224, metavar="PIXELS",
                        help="side of the square input the multiply-adds are counted at")
    parser.add_argument("--torchvision-layout", action="store_true",
                        help="stride on the 3x3 conv instead of the 1x1 (default: the paper's MSRA layout)")
    args = parser.parse_args()
    print(f"{'depth':>6} {'params (M)':>11} {'mult-adds (G)':>14} {'paper (G)':>10} {'diff':>7}")
    for depth in args.depth or sorted(PAPER_GMACS):
        with torch.device("meta"):
            model = getattr(R, f"resnet{depth}")(stride_in_1x1=not args.torchvision_layout)
        gmacs = multiply_adds(model, (1, 3, args.size, args.size)) / 1e9
        paper = PAPER_GMACS[depth]
        print(f"{depth:>6} {count_parameters(model) / 1e6:>11.2f} {gmacs:>14.2f} {paper:>10.1f} "
              f"{100 * (gmacs - paper) / paper:>+6.1f}%")
    return 0


if __name__ == "__main__":
    run_main(main)
