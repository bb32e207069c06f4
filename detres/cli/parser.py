"""The argument parser of every tool: KEY=VALUE config overrides anywhere among the options, help with defaults.

argparse alone puts overrides in a positional `nargs='*'`, which an option placed between two overrides splits
(`--cfg c.yaml a=1 --resume b=2` fails with "unrecognized arguments: b=2"), and `parse_intermixed_args` lets an
option with several values (`--rows a b`) swallow the overrides after it. So the overrides are taken out of the
command line first, by their form `dotted.key=value`, unless the token is the value of an option
(`--cfg a=b.yaml`), and argparse parses the rest; nothing else of argparse is redone here.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")  # solver.max_iter=200, data.test.sets=[..]
OVERRIDES_HELP = ("config overrides KEY=VALUE, anywhere among the options; the value is read as YAML "
                  "(e.g. solver.max_iter=200 test.box_refine=true data.input.train_scales=[480,600])")
PROGRESS_ENV = "DETRES_PROGRESS"  # 1: bars even when stderr is not a terminal (set by --progress)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the tool's docstring as written (its examples) and ends each option's help with its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required:
            return f"{text} (required)"
        shown = action.default not in (None, False, "", [], argparse.SUPPRESS)
        if shown and action.nargs != 0 and "default" not in text.lower():
            text += " (default: %(default)s)"
        return text


class ToolParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose KEY=VALUE overrides (add_overrides) may stand anywhere among the options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.overrides_dest: str | None = None

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        if self.overrides_dest is None:
            return super().parse_known_args(args, namespace)
        tokens = list(sys.argv[1:] if args is None else args)
        rest, overrides = split_overrides(self, tokens)
        parsed, extras = super().parse_known_args(rest, namespace)
        strays = getattr(parsed, self.overrides_dest) or []
        if strays:
            self.error(f"argument {strays[0]!r} is neither an option nor a KEY=VALUE override "
                       "(e.g. solver.max_iter=200)")
        setattr(parsed, self.overrides_dest, overrides)
        return parsed, extras


def tool_parser(description: str, **kwargs: Any) -> ToolParser:
    """The parser a tool builds: its module docstring (with examples) as description, defaults in the help."""
    return ToolParser(description=description, **kwargs)


def add_overrides(parser: ToolParser, help: str = OVERRIDES_HELP) -> None:
    """The `overrides` list of KEY=VALUE config overrides, accepted before, between and after the options."""
    parser.overrides_dest = "overrides"
    parser.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help=help)


class _ProgressAction(argparse.Action):
    """--progress: sets DETRES_PROGRESS=1 for this process and its children (torchrun workers, the demo's steps),
    which detres.cli.progress reads wherever a loop draws a bar."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        os.environ[PROGRESS_ENV] = "1"
        setattr(namespace, self.dest, True)


def add_progress(parser: argparse.ArgumentParser) -> None:
    """--progress: draw tqdm bars even when stderr is not a terminal (default: bars on a terminal only)."""
    parser.add_argument("--progress", action=_ProgressAction,
                        help="draw progress bars even when stderr is not a terminal (by default bars appear on a "
                             "terminal only, never in a redirected log; the periodic log lines are written anyway)")


def _values_after(parser: argparse.ArgumentParser, token: str) -> int | None:
    """How many following tokens are the values of option `token`: a count, None for 'any number', 0 for none
    (a flag, `--opt=value`, or not an option of this parser)."""
    if "=" in token:
        return 0
    action = parser._option_string_actions.get(token)  # argparse has no public lookup of an option string
    if action is None and parser.allow_abbrev and token.startswith("--"):
        matches = {a for s, a in parser._option_string_actions.items() if s.startswith(token)}
        action = matches.pop() if len(matches) == 1 else None
    if action is None:
        return 0
    if action.nargs is None:
        return 1
    if isinstance(action.nargs, int):
        return action.nargs
    return None if action.nargs in ("*", "+", "?") else 0


def split_overrides(parser: argparse.ArgumentParser, tokens: list[str]) -> tuple[list[str], list[str]]:
    """(tokens for argparse, KEY=VALUE overrides in their order). A token of the override form is the value of
    an option when that option takes exactly that many values; after an option of any number of values an
    override still ends the list."""
    rest: list[str] = []
    overrides: list[str] = []
    owed: int | None = 0  # values still owed to the last option; None: it takes any number
    for token in tokens:
        if token == "--":
            owed = 0
            continue
        if owed:
            rest.append(token)
            owed -= 1
        elif token.startswith("-") and len(token) > 1 and not _is_number(token):
            rest.append(token)
            owed = _values_after(parser, token)
        elif OVERRIDE.match(token):
            overrides.append(token)
            owed = 0
        else:
            rest.append(token)
    return rest, overrides


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


class _CapturedParserError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def capture_parser(main: Callable[[], Any]) -> argparse.ArgumentParser:
    """The parser that a tool's main() builds, taken at its parse_args() call, before the tool does any work.

    How the help check and the completion script see every tool's options without each tool exporting its
    parser: a new tool is checked as soon as it exists.
    """
    original = argparse.ArgumentParser.parse_args

    def grab(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> argparse.Namespace:
        raise _CapturedParserError(self)

    argparse.ArgumentParser.parse_args = grab  # type: ignore[method-assign]
    try:
        main()
    except _CapturedParserError as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    raise RuntimeError(f"{main!r} returned without parsing its arguments")
