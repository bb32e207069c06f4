"""Proposals of a training set, computed once by an RPN and stored next to the run, with an integrity check.

Step-wise training's Fast R-CNN steps train on the previous RPN's proposals. They are computed once (every
process its shard of the images, gathered), written atomically as `<name>.pt` and then `<name>.pt.sha256`, and
read back by every process. The file records who made it: the producing checkpoint's weights (a sha256 of the
tensors, not of the file, so a re-save does not count as a change), the training set (its images and boxes) and the
settings (scale, counts). A file whose bytes, producer, data or settings differ from what the run expects is refused
with a StaleProposalsError naming what differs; a `.pt` without its `.sha256` (a kill mid-write) is recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from detres import distributed as dist
from detres.errors import UserError
from detres.io.atomic import write_atomic
from detres.io.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger("detres.train")
FORMAT = "detres-proposals-1"


class StaleProposalsError(UserError):
    """A stored proposal file that does not belong to this run (other RPN, other data, other settings, modified)."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_identity(state_dict: dict[str, Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and values (in key order)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def dataset_identity(records) -> str:
    """sha256 of a training set's images (id, file name, size) and their annotations, in order."""
    digest = hashlib.sha256()
    for rec in records:
        digest.update(f"{rec.image_id}|{Path(rec.image_path).name}|{rec.width}x{rec.height};".encode())
        for array in (rec.boxes, rec.labels, rec.ignore):
            digest.update(array.tobytes())
    return digest.hexdigest()


@torch.no_grad()
def compute_proposals(model: nn.Module, loader, *, topk: tuple[int, int],
                      device: torch.device) -> dict[str, Tensor]:
    """image_id (str) -> [K, 4] proposals in original-image pixels, from the eval-mode RPN with the `topk`
    (pre-NMS, post-NMS) counts; each process proposes for its loader's shard, the shards are gathered."""
    model.eval()
    out: dict[str, Tensor] = {}
    for images, _, metas in loader:
        boxes = model.propose([im.to(device) for im in images], topk)
        for b, meta in zip(boxes, metas):
            sy, sx = meta["scale"]
            out[str(meta["image_id"])] = (b.cpu() / torch.tensor([sx, sy, sx, sy])).float()
    if dist.world_size() > 1:
        gathered: list = [None] * dist.world_size()
        torch.distributed.all_gather_object(gathered, out)
        out = {k: v for part in gathered for k, v in part.items()}
    return out


def write_proposals(path: Path, proposals: dict[str, Tensor], identity: dict) -> None:
    """`path` then `path.sha256`, each atomically (the second marks the first complete)."""
    ids = sorted(proposals)
    state = {"format": FORMAT, "image_ids": ids, "counts": torch.tensor([len(proposals[i]) for i in ids]),
             "boxes": torch.cat([proposals[i].reshape(-1, 4) for i in ids]) if ids else torch.zeros(0, 4),
             "identity": identity}
    save_checkpoint(state, path)
    write_atomic(_sidecar(path), file_sha256(path) + "\n")


def is_complete(path: Path) -> bool:
    return path.is_file() and _sidecar(path).is_file()


def read_proposals(path: Path, expected: dict) -> dict[str, Tensor]:
    """The stored proposals, after checking the file's sha256 and that its identity equals `expected`."""
    sidecar = _sidecar(path)
    fix = f"delete {path} and {sidecar.name} and run again with --resume to recompute them"
    recorded = sidecar.read_text().strip()
    actual = file_sha256(path)
    if actual != recorded:
        raise StaleProposalsError(f"{path}: sha256 {actual[:16]}... differs from the {recorded[:16]}... recorded in "
                                  f"{sidecar.name} when it was written (modified or corrupt); {fix}")
    state = load_checkpoint(path)
    if state.get("format") != FORMAT:
        raise StaleProposalsError(f"{path} is not a detres proposal file (format {state.get('format')!r}); {fix}")
    stored = state["identity"]
    for key, value in expected.items():
        if stored.get(key) != value:
            raise StaleProposalsError(f"{path} is stale: its {key} is {_short(stored.get(key))} but this run's is "
                                      f"{_short(value)} ({_WHAT[key]} changed since it was computed); {fix}")
    boxes = state["boxes"].split(state["counts"].tolist())
    return dict(zip(state["image_ids"], boxes))


_WHAT = {"checkpoint": "the producing RPN's weights", "dataset": "the training set",
         "settings": "the proposal settings (scale, pre/post-NMS counts)"}


def _short(value) -> str:
    return f"{value[:16]}..." if isinstance(value, str) and len(value) > 20 else repr(value)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def ensure_proposals(path: Path, *, model_fn, loader, identity: dict, topk: tuple[int, int],
                     device: torch.device) -> dict[str, Tensor]:
    """Verified proposals at `path`: computed (sharded over the processes) and written by rank 0 when the file is
    absent or incomplete, then read and checked by every process. `model_fn()` builds the producing RPN."""
    dist.barrier()  # every process looks at the file before anyone may write it
    if not is_complete(path):
        log.info("computing proposals %s", path)
        proposals = compute_proposals(model_fn(), loader, topk=topk, device=device)
        if dist.is_main_process():
            write_proposals(path, proposals, identity)
        dist.barrier()
    return read_proposals(path, identity)
