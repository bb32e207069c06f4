"""Detection loader: aspect-ratio-grouped batches, sharded across torchrun processes, reproducible per epoch."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from detres.engine import distributed as dist


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of landscape-only or portrait-only images (less padding), in an order that is a pure function
    of (seed, epoch); under torchrun each process takes every world_size-th batch."""

    def __init__(self, aspect_ratios: np.ndarray, *, batch_size: int, shuffle: bool, group: bool, seed: int,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True) -> None:
        self.groups = (aspect_ratios >= 1.0).astype(int) if group else np.zeros(len(aspect_ratios), int)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start epoch `epoch`, leaving out its first `skip` batches (resuming mid-epoch)."""
        self.epoch, self.skip = epoch, skip

    def _batches(self) -> list[list[int]]:
        order = np.arange(len(self.groups))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        batches, pending = [], {g: [] for g in np.unique(self.groups)}
        for i in order:
            bucket = pending[self.groups[i]]
            bucket.append(int(i))
            if len(bucket) == self.batch_size:
                batches.append(list(bucket))
                bucket.clear()
        if not self.drop_last:
            batches += [b for b in pending.values() if b]
        usable = len(batches) - len(batches) % self.world_size if self.drop_last else len(batches)
        return batches[:usable][self.rank::self.world_size][self.skip:]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def collate_lists(batch):
    """[(image, target, meta)] -> (images, targets, metas) as lists (images differ in size)."""
    images, targets, metas = zip(*batch)
    return list(images), list(targets), list(metas)


def build_detection_loader(dataset, *, batch_size: int, train: bool, num_workers: int, aspect_ratio_grouping: bool,
                           seed: int, distributed: bool) -> DataLoader:
    """Loader of (images, targets, metas) lists; `batch_size` is per process."""
    sampler = GroupedBatchSampler(dataset.aspect_ratios(), batch_size=batch_size, shuffle=train,
                                  group=aspect_ratio_grouping, seed=seed,
                                  rank=dist.rank() if distributed else 0,
                                  world_size=dist.world_size() if distributed else 1, drop_last=train)
    # an own generator: creating an iterator draws a worker seed, which must not consume the global RNG that
    # the RoI sampling uses (a resumed run would otherwise sample differently from an uninterrupted one)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_lists,
                      persistent_workers=False, worker_init_fn=_seed_worker,
                      generator=torch.Generator().manual_seed(seed))


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)
    cv2.setNumThreads(1)  # workers share the cores with the training process: no thread pools of their own
