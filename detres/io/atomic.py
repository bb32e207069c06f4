"""Writing a file so that its name never holds half a file: a new temporary file in the same folder, then a rename.

The one place detres does this (checkpoints, metrics, configs of runs, journals' reports, figures, results files):
`atomic_file` for writers that want a file handle (torch.save, savefig), `write_atomic` for bytes or text.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from detres.errors import UserError


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, make_parents: bool = True, fsync: bool = False,
                fix: str = "check free disk space and permissions", what: str = "",
                error: type[UserError] = UserError) -> Iterator[BinaryIO]:
    """A binary handle on an exclusively created temporary file beside `path` (`.<name>.<random>.tmp`, which
    engine/run_dir.py sweeps up after a kill), renamed onto `path` when the block ends: a crash leaves the old file
    or nothing, and a symlink planted at `path` is replaced, not followed. `fsync`: the bytes, and then the folder's
    entry, reach the disk before returning (checkpoints). Any exception removes the temporary file; an OSError
    becomes `error` ("could not write <what><path>: <reason>; <fix>")."""
    path = Path(path)
    tmp = None
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
        if fsync:
            _fsync_dir(path.parent)
    except OSError as exc:
        raise error(f"could not write {what}{path}: {exc.strerror or exc}; {fix}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes | str, *, make_parents: bool = True,
                 fix: str = "check free disk space and permissions") -> Path:
    """Write `data` (text as UTF-8) to `path` through `atomic_file`. UserError on a failing disk, whose message ends
    with `fix`; no temporary file is left."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_file(path, make_parents=make_parents, fix=fix) as handle:
        handle.write(payload)
    return Path(path)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (the folder's entry reaches the disk); not every platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
