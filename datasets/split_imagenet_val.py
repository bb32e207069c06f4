"""Split ILSVRC DET val into val1 / val2 as the paper does (train on train + val1, test on val2).

    python datasets/split_imagenet_val.py --root datasets/ILSVRC --seed 0

Reads ROOT/ImageSets/DET/val.txt and the val xml, and writes val1.txt and val2.txt (and train_val1.txt =
train.txt + val1.txt when train.txt exists) beside it. Balanced over classes: images are assigned class by class,
rarest class first, each to the half with fewer images of that class, so each synset's images are split about
evenly. Reproducible from the seed.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from detres.data.voc import parse_voc_xml


def split_val(stems: list[str], classes_of: dict[str, set[str]], seed: int) -> tuple[list[str], list[str]]:
    """Class-balanced halves of `stems`; images without objects are split at random.

    Classes are taken rarest first, each class's not yet placed images in a seeded random order, and each image goes
    to the half holding fewer images of that class (then fewer images), so every class ends up split about evenly
    even though images of several classes were already placed by rarer ones.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = defaultdict(list)
    for stem in stems:
        for wnid in sorted(classes_of.get(stem, ())):
            by_class[wnid].append(stem)
    halves: tuple[list[str], list[str]] = ([], [])
    per_class = [defaultdict(int), defaultdict(int)]  # images of each class in each half
    assigned: set[str] = set()
    for wnid in sorted(by_class, key=lambda w: (len(by_class[w]), w)):  # rarest class first
        pending = [s for s in by_class[wnid] if s not in assigned]
        for stem in (str(s) for s in rng.permutation(pending)):
            half = min((0, 1), key=lambda h: (per_class[h][wnid], len(halves[h]), h))
            halves[half].append(stem)
            assigned.add(stem)
            for other in classes_of[stem]:
                per_class[half][other] += 1
    for stem in (str(s) for s in rng.permutation([s for s in stems if s not in assigned])):
        halves[0 if len(halves[0]) <= len(halves[1]) else 1].append(stem)
    return sorted(halves[0]), sorted(halves[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="Split ILSVRC DET val into class-balanced val1/val2.")
    parser.add_argument("--root", default="datasets/ILSVRC")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sets = Path(args.root) / "ImageSets" / "DET"
    stems = [line.split()[0] for line in (sets / "val.txt").read_text().splitlines() if line.strip()]
    classes_of = {s: {o[0] for o in parse_voc_xml(Path(args.root) / "Annotations/DET/val" / f"{s}.xml")[2]}
                  for s in stems}
    val1, val2 = split_val(stems, classes_of, args.seed)
    (sets / "val1.txt").write_text("".join(f"{s}\n" for s in val1))
    (sets / "val2.txt").write_text("".join(f"{s}\n" for s in val2))
    if (sets / "train.txt").is_file():
        train = [line for line in (sets / "train.txt").read_text().splitlines() if line.strip()]
        (sets / "train_val1.txt").write_text("".join(f"{s}\n" for s in train + val1))
    print(f"val1: {len(val1)} images, val2: {len(val2)} images in {sets}")


if __name__ == "__main__":
    main()
