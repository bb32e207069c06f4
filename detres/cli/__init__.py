"""Shared plumbing for the command-line tools (tools/*.py and `detres <verb>`).

- run_main: user errors become one line on stderr, not a traceback;
- detres.cli.parser: the argument parser every tool builds (KEY=VALUE overrides anywhere among the options,
  help that shows each default);
- detres.cli.ckpt_config: the config of a checkpoint-driven tool (--cfg optional, the checkpoint's own config);
- detres.cli.progress: tqdm bars on a terminal only.

Importing this package stays cheap (no torch), so `detres --help` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from detres.cli.parser import ToolParser, add_overrides, add_progress, capture_parser, tool_parser
from detres.errors import UserError

__all__ = ["ToolParser", "add_overrides", "add_progress", "capture_parser", "run_main", "tool_parser"]


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
