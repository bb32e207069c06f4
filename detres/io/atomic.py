"""Writing a file so that its name never holds half a file: a new temporary file in the same folder, then a rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from detres.errors import UserError


def write_atomic(path: str | os.PathLike, data: bytes | str, *, make_parents: bool = True,
                 fix: str = "check free disk space and permissions") -> Path:
    """Write `data` to `path` through an exclusively created temporary file and os.replace: a crash leaves the old
    file or nothing, and a symlink planted at `path` is replaced, not followed. UserError on a failing disk, whose
    message ends with `fix`; no temporary file is left."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = None
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise UserError(f"could not write {path}: {exc.strerror or exc}; {fix}") from None
    return path
