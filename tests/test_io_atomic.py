"""detres/io/atomic.py is the one writer of whole files: a failure leaves the old file and no temporary file, and no
module writes a temporary file and renames it by hand."""

import errno
import re
from pathlib import Path

import pytest

from detres.errors import CheckpointError, UserError
from detres.io.atomic import atomic_file, write_atomic

REPO = Path(__file__).resolve().parents[1]
# where a rename by hand stays, and why
BY_HAND = {
    "detres/io/atomic.py": "the writer itself",
    "detres/config.py": "the lowest layer, below io: save_config cannot import detres.io",
    "detres/analysis/html_page.py": "replaces a whole report folder, not a file",
    "detres/data/demo_data.py": "renames a whole generated data set into place",
    "detres/engine/run_dir.py": "sweeps up the temporary files that a killed writer left",
    "detres/deploy/export.py": "the ONNX exporter writes the model file itself: it is renamed into place after",
    "detres/deploy/quantize.py": "OpenVINO and ONNX Runtime write the int8 files themselves: renamed into place after",
    "datasets/make_large_shapes.py": "a standalone data script that imports nothing from detres",
}


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_atomic(path, "old")

    full = pytest.raises(UserError, match=r"could not write .*metrics.json: No space left on device; check --out")
    with full, atomic_file(path, fix="check --out") as handle:
        handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    # any interruption: nothing half-written, nothing left behind
    with pytest.raises(KeyboardInterrupt), atomic_file(path) as handle:
        handle.write(b"half")
        raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_file_appears_whole_with_the_error_class_asked_for(tmp_path):
    with atomic_file(tmp_path / "sub" / "model.pth", fsync=True) as handle:
        handle.write(b"\x00" * 10)
        assert not (tmp_path / "sub" / "model.pth").exists()  # not under the real name until complete
    assert (tmp_path / "sub" / "model.pth").read_bytes() == b"\x00" * 10
    blocked = tmp_path / "file"
    blocked.write_text("")
    refused = pytest.raises(CheckpointError, match="could not write checkpoint .*x.pth")
    with refused, atomic_file(blocked / "x.pth", what="checkpoint ", error=CheckpointError) as handle:
        handle.write(b"x")


def test_no_module_renames_a_temporary_file_by_hand():
    pattern = re.compile(r"os\.replace\(|mkstemp\(|\.tmp[\"')]|\.replace\(\w*(path|out|target)\b")
    found = sorted(str(p.relative_to(REPO)) for folder in ("detres", "tools", "datasets")
                   for p in (REPO / folder).rglob("*.py") if pattern.search(p.read_text()))
    assert [f for f in found if f not in BY_HAND] == []
