"""Weight files are loaded with weights_only=True: a pickle that would run code is refused, nothing runs.
Checkpoint writes are atomic: a failing write leaves the previous file intact and no temporary file behind."""

import errno
import os
import pickle

import pytest
import torch

from detres.errors import CheckpointError
from detres.io.checkpoint import load_checkpoint, save_checkpoint
from detres.modeling.resnet import resnet18
from detres.modeling.weights import load_resnet_weights


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious-checkpoint payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def evil_file(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:
        pickle.dump({"model": _RunsCode(marker)}, handle)
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, tmp_path / "evil_torch.pth")
    return path, tmp_path / "evil_torch.pth", marker


def test_crafted_pickles_are_refused_and_run_nothing(evil_file):
    raw, torch_format, marker = evil_file
    for path in (raw, torch_format):
        with pytest.raises(CheckpointError, match=r"refused to load|could not read"):
            load_checkpoint(path)
        with pytest.raises(CheckpointError):
            load_resnet_weights(resnet18(), path)
    assert not marker.exists()


def test_truncated_and_missing_files_are_clear_errors(tmp_path):
    good = save_checkpoint({"model": resnet18(width=8).state_dict()}, tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     PermissionError(errno.EACCES, "Permission denied")])
def test_failing_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "model.pth"
    save_checkpoint({"iteration": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise failure

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*model.pth"):
        save_checkpoint({"iteration": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]
