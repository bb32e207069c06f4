"""Detection loader: aspect-ratio-grouped batches, sharded across torchrun processes, reproducible per epoch.

Failures in worker processes come back as one clear error raised where the batch is requested: an unreadable
image is already replaced by the dataset (and logged by the worker); a UserError raised in a worker keeps its
own message (PyTorch would prefix the worker's whole traceback); a worker that dies (killed by the
out-of-memory killer, or crashed in native code) or hangs (no batch within `data.loader_timeout` seconds)
becomes a LoaderWorkerError that says what to do. Every loader with workers in detres is a CheckedLoader.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from detres import distributed as dist
from detres.data.train_scales import batch_scale
from detres.errors import ConfigError, UserError

# what PyTorch's dead-worker and timeout RuntimeErrors say (torch/utils/data/dataloader.py, _utils/signal_handling.py)
_WORKER_DEATH_MARKER = "DataLoader worker (pid"
_TIMEOUT_MARKER = "DataLoader timed out"
_deferred_failures: list[str] = []  # dead-worker reports caught in the SIGCHLD handler, raised at the next batch
_deferring = False


class LoaderWorkerError(UserError):
    """A data loader worker process died or hung; the batches it was preparing are lost."""


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of landscape-only or portrait-only images (less padding), in an order that is a pure function
    of (seed, epoch); under torchrun each process takes every world_size-th batch."""

    def __init__(self, aspect_ratios: np.ndarray, *, batch_size: int, shuffle: bool, group: bool, seed: int,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 batch_scales: list[int] | None = None) -> None:
        self.groups = (aspect_ratios >= 1.0).astype(int) if group else np.zeros(len(aspect_ratios), int)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.skip = 0
        self.batch_scales = batch_scales  # set: each batch's items are (index, shorter side), one side per iteration

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
        if self.batch_scales:  # the scale of global iteration j // world_size, shared by all processes' batches
            batches = [[(i, batch_scale(self.batch_scales, seed=self.seed, epoch=self.epoch,
                                        iteration=j // self.world_size)) for i in b] for j, b in enumerate(batches)]
        return batches[:usable][self.rank::self.world_size][self.skip:]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def collate_lists(batch):
    """[(image, target, meta)] -> (images, targets, metas) as lists (images differ in size)."""
    images, targets, metas = zip(*batch)
    return list(images), list(targets), list(metas)


class CheckedLoader(DataLoader):
    """A DataLoader whose worker failures surface as clear errors at the batch request (see the module doc).

    `timeout` (seconds) applies only with workers: PyTorch allows none in a single process.
    """

    def __init__(self, *args, timeout: float = 0.0, **kwargs) -> None:
        workers = kwargs.get("num_workers", 0)
        if workers > 0 and not timeout > 0:
            raise ConfigError(f"data.loader_timeout={timeout} must be a positive number of seconds (default 300)")
        super().__init__(*args, timeout=timeout if workers > 0 else 0.0, **kwargs)

    def __iter__(self) -> Iterator:
        _deferred_failures.clear()  # reports about earlier loaders' workers: those loaders raise their own
        batches = super().__iter__()
        if self.num_workers > 0:
            _defer_worker_failure_reports()
        while True:
            _raise_deferred_failure()
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RuntimeError as exc:
                if _TIMEOUT_MARKER in str(exc):
                    raise _worker_hung(self.timeout) from None
                if _WORKER_DEATH_MARKER not in str(exc):
                    raise
                raise _worker_died(str(exc)) from None
            except UserError as exc:
                clean = _unwrapped(exc)
                if clean is exc:
                    raise
                raise clean from None
            yield batch


def _worker_died(report: str) -> LoaderWorkerError:
    """The error for a dead worker; PyTorch's own report (exit code or signal) is kept, its advice replaced."""
    detail = (_deferred_failures[0] if _deferred_failures else report).split(". ")[0].rstrip(".")
    _deferred_failures.clear()
    return LoaderWorkerError(
        f"a data loader worker process died ({detail}). Usual causes: the out-of-memory killer (lower "
        "data.num_workers or solver.ims_per_batch) or a crash inside an image decoder on a corrupt file (set "
        "data.num_workers=0 to see which file). A training run continues from its last checkpoint with --resume")


def _worker_hung(timeout: float) -> LoaderWorkerError:
    """The error for a worker that sent no batch within the timeout (a stalled network disk, a stuck decoder)."""
    return LoaderWorkerError(
        f"no batch arrived from the data loader workers within data.loader_timeout={timeout:g} s: a worker hung "
        "(a stalled network file system, or an image decoder stuck on a file). If reading is just slow, raise "
        f"data.loader_timeout (for example data.loader_timeout={max(2 * timeout, 600):g}); to find the file, set "
        "data.num_workers=0. A training run continues from its last checkpoint with --resume")


def _raise_deferred_failure() -> None:
    if _deferred_failures:
        raise _worker_died(_deferred_failures[0])


def _unwrapped(exc: UserError) -> UserError:
    """A UserError re-raised by PyTorch from a worker, with its original message instead of the worker's traceback.

    PyTorch rebuilds the exception as type(exc)("Caught X in DataLoader worker process N. Original Traceback
    ... module.X: <message>"); the original message follows the last "module.X: " of that text.
    """
    text = str(exc)
    kind = type(exc)
    marker = f"{kind.__module__}.{kind.__qualname__}: "
    if not text.startswith("Caught ") or marker not in text:
        return exc
    message = text.rsplit(marker, 1)[1].rstrip("\n")
    try:
        return kind(message)
    except TypeError:  # a subclass with another constructor: keep the message, lose the subclass
        return UserError(message)


def _defer_worker_failure_reports() -> None:
    """Let a dead worker be reported by the next batch request instead of wherever the main process happens to be.

    PyTorch raises its dead-worker RuntimeError from inside its SIGCHLD handler, that is in the middle of any
    code the main process runs (a forward pass, a checkpoint write), where it cannot be told from a bug. Wrapped,
    the handler keeps PyTorch's report and CheckedLoader raises it, named, at the next batch; a loader also
    finds a dead worker on its own within seconds while it waits for data. Installed once, from the main
    thread, after PyTorch installed its own handler.
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGCHLD"):
        return
    torch_handler = signal.getsignal(signal.SIGCHLD)
    if not callable(torch_handler):
        return

    def handler(signum, frame) -> None:
        try:
            torch_handler(signum, frame)
        except RuntimeError as exc:
            _deferred_failures.append(str(exc))

    signal.signal(signal.SIGCHLD, handler)
    _deferring = True


def build_detection_loader(dataset, *, batch_size: int, train: bool, num_workers: int, aspect_ratio_grouping: bool,
                           seed: int, distributed: bool, timeout: float = 300.0,
                           batch_scales: list[int] | None = None) -> DataLoader:
    """Loader of (images, targets, metas) lists; `batch_size` is per process; `timeout`: seconds a worker may take
    for a batch (data.loader_timeout); `batch_scales`: one shorter side per mini-batch drawn from these (training)."""
    sampler = GroupedBatchSampler(dataset.aspect_ratios(), batch_size=batch_size, shuffle=train,
                                  group=aspect_ratio_grouping, seed=seed,
                                  rank=dist.rank() if distributed else 0,
                                  world_size=dist.world_size() if distributed else 1, drop_last=train,
                                  batch_scales=batch_scales if train else None)
    if num_workers > 0:
        # Workers share the cores with the training process, so OpenCV runs single-threaded in them. It must be set
        # here, before they fork: set inside a forked worker it deadlocks once this process has started OpenCV's
        # thread pool (training without backbone weights resizes calibration images first and hung at batch one).
        cv2.setNumThreads(1)
    # an own generator: creating an iterator draws a worker seed, which must not consume the global RNG that
    # the RoI sampling uses (a resumed run would otherwise sample differently from an uninterrupted one)
    return CheckedLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_lists,
                         persistent_workers=False, worker_init_fn=_seed_worker, timeout=timeout,
                         generator=torch.Generator().manual_seed(seed))


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)
