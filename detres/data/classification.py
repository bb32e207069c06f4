"""Classification datasets: the ImageNet folder layout, the CIFAR-10 python batches, with Sec. 3.4/4.2 transforms."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from detres.config import DatasetConfig, InputConfig
from detres.data import cls_transforms as T
from detres.errors import ConfigError, DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
CIFAR_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_FILES = ["test_batch"]


class SeededAugmentation:
    """Reseeds the augmentation per (seed, epoch, index), so the augmented stream is a pure function of them:
    worker processes draw different crops, and a resumed run draws exactly the crops of an uninterrupted one."""

    seed: int | None = None
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def augment(self, image: np.ndarray, index: int) -> np.ndarray:
        if self.seed is not None:
            self.transform.set_random_seed((self.seed * 1_000_003 + self.epoch * 100_003 + index) % 2**32)
        return self.transform(image=image)["image"]


class ImageFolderDataset(SeededAugmentation, Dataset):
    """`root/<split>/<wnid>/*.JPEG`; class index = position of the wnid in sorted order (ImageNet's synset order)."""

    def __init__(self, *, root: str, split: str, transform, max_pixels: int) -> None:
        folder = Path(root) / split
        if not folder.is_dir():
            raise DataError(f"classification split folder not found: {folder} (expected {root}/{split}/<class>/...)")
        self.class_names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not self.class_names:
            raise DataError(f"{folder} has no class folders; expected {folder}/<wnid>/<image>.JPEG")
        self.samples = [(str(path), label) for label, name in enumerate(self.class_names)
                        for path in sorted((folder / name).iterdir()) if path.suffix.lower() in IMAGE_EXTENSIONS]
        if not self.samples:
            raise DataError(f"{folder} has class folders but no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def load_rgb(self, index: int) -> np.ndarray:
        from detres.data.image_io import read_image_rgb  # the one image reader of detres (EXIF, gray, 16-bit...)

        return read_image_rgb(self.samples[index][0], max_pixels=self.max_pixels)

    def label_of(self, index: int) -> int:
        return self.samples[index][1]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return T.to_chw_tensor(self.augment(self.load_rgb(index), index)), self.samples[index][1]


class Cifar10Dataset(SeededAugmentation, Dataset):
    """The `cifar-10-batches-py` folder (5 training batches, 1 test batch of 32x32 RGB images)."""

    def __init__(self, *, root: str, train: bool, transform) -> None:
        folder = Path(root)
        images, labels = [], []
        for name in CIFAR_TRAIN_FILES if train else CIFAR_TEST_FILES:
            batch = _read_cifar_batch(folder / name)
            images.append(batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += list(batch[b"labels"])
        self.images = np.concatenate(images)
        self.labels = labels
        meta = folder / "batches.meta"
        self.class_names = ([n.decode() for n in _read_cifar_batch(meta)[b"label_names"]] if meta.is_file()
                            else [str(i) for i in range(10)])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def load_rgb(self, index: int) -> np.ndarray:
        return self.images[index]

    def label_of(self, index: int) -> int:
        return self.labels[index]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return T.to_chw_tensor(self.augment(self.images[index], index)), self.labels[index]


def _read_cifar_batch(path: Path) -> dict:
    """CIFAR-10 ships as Python pickles; there is no other format of it. We unpickle only files named as the
    dataset names them, refuse any class other than dict/bytes/list/ndarray, and check the layout.

    The real files are Python 2 pickles; the same dicts pickled again by Python 3 (a subset, a copy) load too:
    protocol 2 writes bytes through `_codecs.encode`, protocol 5 writes arrays through `numeric._frombuffer`;
    both only build data.
    """
    if not path.is_file():
        raise DataError(f"CIFAR-10 file not found: {path} (expected the cifar-10-batches-py folder)")

    class _Restricted(pickle.Unpickler):
        ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
                   ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                   ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

        def find_class(self, module, name):
            if (module, name) in self.ALLOWED:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")

    try:
        with path.open("rb") as handle:
            data = _Restricted(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 batch file: {exc}") from None
    if not isinstance(data, dict) or (b"data" not in data and b"label_names" not in data):
        raise DataError(f"{path} is not a CIFAR-10 batch file (no b'data' / b'label_names' entry)")
    return data


def build_cls_dataset(ds: DatasetConfig, *, input_cfg: InputConfig, pixel_mean: list[float],
                      pixel_std: list[float], train: bool, transform=None) -> Dataset:
    """The classification dataset of `ds.format` (imagenet_cls | cifar10) with the paper's transforms.

    `transform` overrides the default one (test modes that crop themselves pass `normalize_only`).
    """
    if ds.format == "imagenet_cls":
        if transform is None:
            make = T.imagenet_train_transform if train else T.imagenet_test_transform
            transform = make(input_cfg, pixel_mean, pixel_std)
        return ImageFolderDataset(root=ds.root, split=ds.split or ("train" if train else "val"),
                                  transform=transform, max_pixels=input_cfg.max_pixels)
    if ds.format == "cifar10":
        if transform is None:
            make = T.cifar_train_transform if train else T.cifar_test_transform
            transform = make(input_cfg, pixel_mean, pixel_std)
        return Cifar10Dataset(root=ds.root, train=train, transform=transform)
    raise ConfigError(f"data.{'train' if train else 'test'}.format={ds.format!r} is not a classification "
                      "format; use imagenet_cls or cifar10")
