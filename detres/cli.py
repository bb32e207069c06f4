"""Shared plumbing for the command-line tools: user errors become one line on stderr, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from detres.errors import UserError


def run_main(main: Callable[[], int | None]) -> None:
    """Run a tool's main(); print a UserError as `error: ...` and exit 2, Ctrl-C exits 130."""
    try:
        code = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
