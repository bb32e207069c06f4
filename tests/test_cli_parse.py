"""Options and KEY=VALUE overrides in any order give the same arguments, for every tool (its own parser)."""

import argparse
from pathlib import Path

import pytest

from detres import commands
from detres.cli import capture_parser
from detres.cli.parser import PROGRESS_ENV, split_overrides
from detres.config import load_config

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["output.dir=runs/x", "solver.max_iter=200"]


@pytest.fixture(autouse=True)
def _no_progress_env(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)  # --progress sets it while parsing


def _sample(action: argparse.Action) -> list[str]:
    """A valid value list for `action` (choices first, else a value of its type)."""
    if action.nargs == 0:
        return []
    if action.choices:
        values = [str(c) for c in action.choices]
    elif action.type is int:
        values = ["3", "4"]
    elif action.type is float:
        values = ["0.25", "0.5"]
    elif callable(action.type) and action.type not in (str, Path):  # a tool's own value form: one it accepts
        values = [v for v in ("0,4", "1", "a.x") if _accepts(action.type, v)][:1] * 2
    else:
        values = [f"{action.dest}_a.x", f"{action.dest}_b.x"]
    return values[:2] if action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1) \
        else values[:1]


def _accepts(convert, value: str) -> bool:
    try:
        convert(value)
    except (argparse.ArgumentTypeError, TypeError, ValueError):
        return False
    return True


def _option_groups(parser: argparse.ArgumentParser) -> list[list[str]]:
    """Every option of the parser once, with sample values: [[--opt, v1, ...], ...]."""
    return [[action.option_strings[-1], *_sample(action)] for action in parser._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)]


def _orders(groups: list[list[str]], overrides: list[str]) -> list[list[str]]:
    """Overrides after the options, before them, and spread between every pair of options."""
    flat = [t for g in groups for t in g]
    spread: list[str] = []
    pending = list(overrides)
    for group in groups:
        spread += group
        if pending:
            spread.append(pending.pop(0))
    return [flat + overrides, overrides + flat, spread + pending]


@pytest.mark.parametrize("verb", sorted(commands.available()))
def test_options_and_overrides_in_any_order_parse_the_same(verb):
    parser = capture_parser(commands.load_tool(verb).main)
    takes_overrides = any(a.dest == "overrides" for a in parser._actions)
    parsed = [vars(parser.parse_args(argv))
              for argv in _orders(_option_groups(parser), OVERRIDES if takes_overrides else [])]
    assert parsed[0] == parsed[1] == parsed[2]
    if takes_overrides:
        assert parsed[0]["overrides"] == OVERRIDES


def test_the_issue_command_line_gives_the_config_of_the_tidy_one():
    parser = capture_parser(commands.load_tool("train").main)
    cfg = str(REPO / "configs" / "demo.yaml")
    messy = parser.parse_args(["--cfg", cfg, "output.dir=runs/x", "--resume", "solver.max_iter=200"])
    tidy = parser.parse_args(["--resume", "--cfg", cfg, "output.dir=runs/x", "solver.max_iter=200"])
    assert vars(messy) == vars(tidy)
    config = load_config(messy.cfg, messy.overrides)
    assert config == load_config(tidy.cfg, tidy.overrides)
    assert (config.output.dir, config.solver.max_iter, messy.resume) == ("runs/x", 200, True)


def test_an_option_value_of_override_form_stays_the_options_and_lists_end_at_an_override():
    parser = capture_parser(commands.load_tool("test-loc").main)
    args = parser.parse_args(["--cfg", "a=b.yaml", "--rows", "whole_image", "rpn_dense", "loc.x=1",
                              "--out=m=1.json", "seed=3"])
    assert (args.cfg, args.rows, args.out, args.overrides) == ("a=b.yaml", ["whole_image", "rpn_dense"], "m=1.json",
                                                               ["loc.x=1", "seed=3"])
    assert split_overrides(parser, ["--max-images", "-1", "a.b=-1"]) == (["--max-images", "-1"], ["a.b=-1"])


def test_a_stray_word_is_an_error_that_says_what_was_expected(capsys):
    parser = capture_parser(commands.load_tool("train").main)
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--cfg", "c.yaml", "max_iter"])
    assert done.value.code == 2
    assert "'max_iter' is neither an option nor a KEY=VALUE override" in capsys.readouterr().err
