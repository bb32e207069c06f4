"""Browse a dataset: its ground truth drawn over the images (ignored and difficult boxes marked), as a page.

    python tools/browse_dataset.py --cfg configs/demo.yaml --split test --out runs/browse_val
    python tools/browse_dataset.py --cfg configs/demo.yaml --split train --augmented --out runs/browse_train_aug
"""

from __future__ import annotations

from detres.analysis.browse import browse
from detres.cli import add_overrides, run_main, tool_parser
from detres.config import load_config
from detres.data.detection import build_split, read_split
from detres.data.formats import detection_format


def main() -> int:
    parser = tool_parser(__doc__)
    parser.add_argument("--cfg", required=True, help="config file whose data.train / data.test to show, "
                                                     "e.g. configs/demo.yaml")
    parser.add_argument("--split", choices=["train", "test"], default="train",
                        help="which dataset of the config: train (data.train) or test (data.test); default train")
    parser.add_argument("--out", required=True, help="page folder to write (replaced if it holds a previous page), "
                                                     "e.g. runs/browse_train")
    parser.add_argument("--augmented", action="store_true",
                        help="draw the items after the training augmentation (data.augment, the data.train_crop "
                             "windows, the paper's resize and flip: what the model sees in training); default: the "
                             "images as stored")
    parser.add_argument("--max-images", type=int, default=50, help="how many images to draw (default 50)")
    add_overrides(parser)
    args = parser.parse_args()
    cfg = load_config(args.cfg, args.overrides)
    ds_cfg = cfg.data.train if args.split == "train" else cfg.data.test
    word = detection_format(ds_cfg, where=f"data.{args.split}").ignore_word
    if args.augmented:
        dataset = build_split(cfg.data, args.split, pixel_mean=cfg.model.backbone.pixel_mean,
                              pixel_std=cfg.model.backbone.pixel_std, train=True, seed=cfg.seed)
        out = browse(args.out, dataset=dataset, class_map=dataset.class_map, max_images=args.max_images,
                     ignored_word=word, title=f"{args.cfg}: {args.split} images after the training augmentation",
                     pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std)
    else:
        records, class_map = read_split(cfg.data, args.split, seed=cfg.seed)
        out = browse(args.out, records=records, class_map=class_map, max_images=args.max_images, ignored_word=word,
                     title=f"{args.cfg}: {args.split} ground truth")
    print(f"wrote {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    run_main(main)
