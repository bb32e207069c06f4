"""tqdm bars where a person watches: on a terminal, never in a redirected log (cluster jobs, `> log`).

Every loop in detres that shows progress goes through `progress()`. tqdm's own rule `disable=None` ("off when the
stream is not a terminal") decides; `--progress` (DETRES_PROGRESS=1) forces bars on, DETRES_PROGRESS=0 off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm import tqdm

from detres.cli.parser import PROGRESS_ENV


def bars_disabled(enabled: bool = True) -> bool | None:
    """tqdm's `disable`: True when the caller or DETRES_PROGRESS=0 says no, False when DETRES_PROGRESS=1,
    else None (tqdm then draws only when its stream, stderr, is a terminal)."""
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if not enabled or forced in ("0", "false", "no"):
        return True
    if forced in ("1", "true", "yes"):
        return False
    return None


def progress(iterable: Iterable, *, desc: str, total: int | None = None, leave: bool = True,
             enabled: bool = True) -> tqdm:
    """`iterable` wrapped in a tqdm bar that is drawn on a terminal only (see the module docstring).

    enabled: the caller's own switch (e.g. only the main process of a distributed run draws).
    """
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=bars_disabled(enabled))
