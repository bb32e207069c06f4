"""`detres <verb>`: a verb for every tool in tools/, and every option of every tool explained (what, default, form).

The parsers are taken from the tools themselves (detres.cli.capture_parser), so a tool or an option added later is
checked with no change here.
"""

import argparse
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detres import commands
from detres.cli import ToolParser, capture_parser, tool_parser

REPO = Path(__file__).resolve().parents[1]
TOOL_FILES = sorted(p.stem for p in (REPO / "tools").glob("*.py") if p.stem != "__init__")
VERBS = sorted(commands.available())


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """The options of `parser` whose help is missing, says nothing, or (for an optional value) gives no default."""
    formatter = parser._get_formatter()
    problems = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = (action.help or "").strip()
        if len(text) < 15 or text == argparse.SUPPRESS:
            problems.append(f"{name}: no help text")
            continue
        shown = formatter._get_help_string(action) % {"default": action.default}
        takes_value = action.nargs != 0
        if action.option_strings and takes_value and not action.required and "default" not in shown.lower():
            problems.append(f"{name}: the help does not say the default")
        if not action.option_strings and "KEY=VALUE" in (action.metavar or "") and "e.g." not in text:
            problems.append(f"{name}: the help shows no example")
    return problems


def _parser(verb: str) -> argparse.ArgumentParser:
    return capture_parser(commands.load_tool(verb).main)


def test_every_tool_has_a_verb_and_every_listed_verb_a_tool():
    assert sorted(commands.COMMANDS[v] for v in VERBS) == TOOL_FILES
    for verb in ("train", "test", "infer", "eval", "demo", "bench", "train-cls", "test-cls", "train-loc",
                 "test-loc", "recompute-bn", "model-info"):
        assert verb in VERBS


@pytest.mark.parametrize("verb", VERBS)
def test_every_option_is_documented_and_help_exits_zero(verb, capsys):
    parser = _parser(verb)
    assert isinstance(parser, ToolParser), f"tools/{commands.COMMANDS[verb]}.py: build it with detres.cli.tool_parser"
    assert undocumented(parser) == []
    with pytest.raises(SystemExit) as done:
        commands.run(verb, ["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: detres {verb} ")
    for action in parser._actions:
        for option in action.option_strings:
            assert option in text


def test_the_check_finds_an_option_without_help_or_default():
    parser = tool_parser("x")
    parser.add_argument("--bare")
    parser.add_argument("--silent-default", default=None, help="a value whose fallback goes unsaid")
    parser.add_argument("--fine", default=3, type=int, help="a value whose default is appended")
    assert undocumented(parser) == ["--bare: no help text", "--silent-default: the help does not say the default"]


def test_the_console_entry_lists_verbs_prints_versions_and_names_typos():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    listing = subprocess.run([sys.executable, "-m", "detres", "--help"], env=env, capture_output=True, text=True)
    assert listing.returncode == 0
    assert all(f"  {verb} " in listing.stdout for verb in VERBS)
    version = subprocess.run([sys.executable, "-m", "detres", "--version"], env=env, capture_output=True, text=True)
    import torch

    assert version.returncode == 0
    assert "detres 0.1.0" in version.stdout and f"torch {torch.__version__}" in version.stdout
    typo = subprocess.run([sys.executable, "-m", "detres", "trian"], env=env, capture_output=True, text=True)
    assert typo.returncode == 2 and typo.stderr.strip() == (
        "error: unknown command 'trian'; did you mean train? (`detres --help` lists them)")


def test_a_verb_runs_its_tool_with_the_same_arguments_as_the_script():
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["--depth", "18", "--size", "64"]
    script = subprocess.run([sys.executable, str(REPO / "tools" / "model_info.py"), *args], env=env,
                            capture_output=True, text=True, check=True)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert commands.run("model-info", args) == 0
    assert out.getvalue() == script.stdout and "18" in script.stdout
