"""`data.augment`: albumentations transforms from the config, box-aware, drawn reproducibly per (seed, epoch, index).

Every entry is a transform in albumentations' own serialized form (`{__class_fullname__: VerticalFlip, p: 0.5}`,
what `A.to_dict` writes), built by `A.from_dict`, so every transform of the library is available with no detres
code per transform. They run in one `A.Compose` whose BboxParams move the boxes, labels and ignore flags with the
pixels, clip them to the image and drop those left with less than `min_visibility` of their area.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import albumentations as A
import numpy as np

from detres.data.records import clip_and_filter
from detres.errors import ConfigError, DataError

# a separate random stream from the scale/flip draw of the dataset, so that runs without data.augment draw as before
AUGMENT_STREAM = 1
# the label that marks stored proposals (step-wise training) carried through a draw beside the ground truth
PROPOSAL_LABEL = -1
# albumentations transforms whose random draw reads the boxes: carried proposals would change where they crop
BOX_DEPENDENT = ("BBoxSafeRandomCrop", "RandomSizedBBoxSafeCrop", "AtLeastOneBBoxRandomCrop", "Mosaic")


def build_augment(entries: list[dict[str, Any]], *, min_visibility: float) -> A.Compose | None:
    """The pipeline of `data.augment` (None when empty); ConfigError naming the entry for a bad name or argument."""
    if not entries:
        return None
    if not 0.0 <= min_visibility <= 1.0:
        raise ConfigError(f"data.augment_min_visibility={min_visibility} must be in [0, 1] (default 0.1)")
    transforms = [_build_entry(i, entry) for i, entry in enumerate(entries)]
    return A.Compose(transforms, bbox_params=A.BboxParams(
        format="pascal_voc", label_fields=["labels", "ignore"], clip=True, min_visibility=min_visibility))


def _build_entry(index: int, entry: Any) -> A.BasicTransform | A.BaseCompose:
    where = f"data.augment[{index}]"
    if not isinstance(entry, dict) or "__class_fullname__" not in entry:
        raise ConfigError(f"{where} = {entry!r}: each entry is a transform in albumentations' serialized form, "
                          "e.g. {__class_fullname__: VerticalFlip, p: 0.5}")
    name = entry["__class_fullname__"]
    # albumentations only warns about an argument a transform does not take; a typo must not pass silently
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            transform = A.from_dict({"transform": _plain(entry)})
        except KeyError as exc:
            raise ConfigError(f"{where}: unknown albumentations transform {name!r} ({exc}); names are the class "
                              "names of albumentations, e.g. VerticalFlip, RandomRotate90, ColorJitter") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where} ({name}): bad argument: {_first_lines(exc)}") from None
    for warning in caught:
        text = str(warning.message)
        if "not valid for transform" in text:
            raise ConfigError(f"{where} ({name}): {text}; see the transform's arguments in the albumentations docs")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return transform


def box_dependent_transforms(pipeline: A.BaseCompose | None) -> list[str]:
    """Names of the transforms in `pipeline` (nested OneOf/Sequential included) whose draw reads the boxes."""
    found = []
    for transform in getattr(pipeline, "transforms", []) if pipeline is not None else []:
        if type(transform).__name__ in BOX_DEPENDENT:
            found.append(type(transform).__name__)
        found += box_dependent_transforms(transform if isinstance(transform, A.BaseCompose) else None)
    return found


def apply_augment(pipeline: A.Compose, rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray, ignore: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One draw of the pipeline on an image [H, W, 3] uint8 with boxes [N, 4] XYXY; `rng` decides every random
    choice (its own numpy and Python generators are handed to every transform), so a draw is reproducible."""
    return augment_with_proposals(pipeline, rgb, boxes, labels, ignore, rng, None)[:4]


def augment_with_proposals(pipeline: A.Compose, rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                           ignore: np.ndarray, rng: np.random.Generator, proposals: np.ndarray | None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """`apply_augment`, and the stored proposals [K, 4] XYXY (None: none) moved by the same draw.

    The proposals travel as boxes of label PROPOSAL_LABEL in the same call, so each transform maps them exactly as
    it maps the ground truth (clipped, and dropped under min_visibility like any box). The draw itself does not
    change with them unless a transform reads the boxes (BOX_DEPENDENT), which step-wise training refuses."""
    pipeline.set_random_state(rng, random.Random(int(rng.integers(2**63))))
    boxes = boxes.reshape(-1, 4)
    if proposals is not None:
        proposals, keep = clip_and_filter(proposals, rgb.shape[1], rgb.shape[0])  # albumentations refuses empty boxes
        boxes = np.concatenate([boxes, proposals[keep]])
        labels = np.concatenate([labels, np.full(int(keep.sum()), PROPOSAL_LABEL, labels.dtype)])
        ignore = np.concatenate([ignore, np.zeros(int(keep.sum()), bool)])
    try:
        out = pipeline(image=rgb, bboxes=boxes, labels=labels, ignore=ignore)
    except (ValueError, TypeError, IndexError) as exc:
        raise DataError(f"data.augment failed on a {rgb.shape[1]}x{rgb.shape[0]} image: {_first_lines(exc)}; "
                        "check the transform's arguments against the image sizes") from None
    image = np.ascontiguousarray(out["image"])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"data.augment returned a {image.dtype} image of shape {image.shape}; the transforms must "
                        "keep an 8-bit 3-channel image (e.g. no ToFloat/Normalize: detres normalizes afterwards)")
    out_boxes, keep = clip_and_filter(np.asarray(out["bboxes"], np.float32), image.shape[1], image.shape[0])
    out_labels = np.asarray(out["labels"], np.int64).reshape(-1)
    out_ignore = np.asarray(out["ignore"], bool).reshape(-1)
    moved = None
    if proposals is not None:
        is_proposal = out_labels == PROPOSAL_LABEL
        moved = out_boxes[keep & is_proposal]
        keep = keep & ~is_proposal
    return image, out_boxes[keep], out_labels[keep], out_ignore[keep], moved


def augment_rng(seed: int, epoch: int, index: int, stream: int = AUGMENT_STREAM) -> np.random.Generator:
    """The generator of image `index`'s augmentation in `epoch`: a pure function, so workers and --resume agree.
    `stream` separates draws of the same item (data.train_crop's window: detres.data.crops.CROP_STREAM)."""
    return np.random.default_rng([seed, epoch, index, stream])


def _plain(value: Any) -> Any:
    """Lists for tuples (YAML has no tuples; albumentations accepts both) and plain containers throughout."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _first_lines(exc: Exception, limit: int = 3) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines()[:limit])
