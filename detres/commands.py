"""`detres <verb> ...`: one command for every tool in tools/ (the console entry point, and `python -m detres`).

A verb runs its tool's own main(): `detres infer ARGS` and `python tools/infer.py ARGS` parse the same arguments
with the same parser, there is no second copy. The tools folder is shipped in the wheel as the package
`detres_tools` (pyproject's package-dir mapping); in a source checkout the folder next to this package is used,
so the tools of the checkout run with its own detres.

Adding a tool is one line in COMMANDS; a verb whose tool is absent from this copy is left out of the listing.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import detres
from detres.cli import run_main
from detres.errors import UserError

TOOLS_PACKAGE = "detres_tools"
COMMANDS: dict[str, str] = {  # verb -> tools/<module>.py
    "train": "train_det",
    "test": "test_det",
    "infer": "infer",
    "serve": "serve",
    "eval": "eval_det",
    "export": "export",
    "analyze": "analyze_det",
    "browse": "browse_dataset",
    "stats": "dataset_stats",
    "demo": "demo",
    "bench": "bench",
    "ablate": "ablate_det",
    "profile": "profile_det",
    "time": "time_det",
    "soak": "soak_memory",
    "bench-infer": "bench_infer",
    "bench-serve": "bench_serve",
    "bench-precision": "bench_precision",
    "bench-roi-align": "bench_roi_align",
    "time-coco-eval": "time_coco_eval",
    "time-export": "time_export",
    "train-cls": "train_cls",
    "test-cls": "test_cls",
    "train-loc": "train_loc",
    "test-loc": "test_loc",
    "recompute-bn": "recompute_bn",
    "model-info": "model_info",
}


def _checkout_tools() -> Path | None:
    """tools/ of the source checkout this detres was imported from, if it is one."""
    root = Path(__file__).resolve().parents[1]
    tools = root / "tools"
    return tools if (tools / "__init__.py").is_file() and (root / "pyproject.toml").is_file() else None


def tools_package() -> ModuleType:
    """The package of the tools: the checkout's tools/ folder when there is one, else the installed copy."""
    if TOOLS_PACKAGE in sys.modules:
        return sys.modules[TOOLS_PACKAGE]
    folder = _checkout_tools()
    if folder is None:
        return importlib.import_module(TOOLS_PACKAGE)
    spec = importlib.util.spec_from_file_location(TOOLS_PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[TOOLS_PACKAGE] = package
    spec.loader.exec_module(package)
    return package


def tool_file(verb: str) -> Path | None:
    """The tool's source file, or None when this copy of detres does not have it."""
    package = tools_package()
    path = Path(package.__path__[0]) / f"{COMMANDS[verb]}.py"
    return path if path.is_file() else None


def available() -> dict[str, Path]:
    """{verb: tool file} of the verbs whose tool exists here."""
    return {verb: path for verb in COMMANDS if (path := tool_file(verb)) is not None}


def load_tool(verb: str) -> ModuleType:
    """The tool module behind `verb`; UserError naming the close verbs for a typo."""
    if verb not in COMMANDS:
        close = difflib.get_close_matches(verb, list(COMMANDS), n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UserError(f"unknown command {verb!r}{hint} (`detres --help` lists them)")
    if tool_file(verb) is None:
        raise UserError(f"`detres {verb}` needs tools/{COMMANDS[verb]}.py, which this copy of detres does not have")
    return importlib.import_module(f"{TOOLS_PACKAGE}.{COMMANDS[verb]}")


def run(verb: str, argv: list[str]) -> int:
    """Run `detres verb argv...` in this process: the tool's main() sees argv as its command line and
    `detres verb` as its program name. Exceptions propagate (run_main turns user errors into one line)."""
    module = load_tool(verb)
    saved = sys.argv
    sys.argv = [f"detres {verb}", *argv]
    try:
        return module.main() or 0
    finally:
        sys.argv = saved


def summary(path: Path) -> str:
    """The first line of a tool's docstring, read without importing it (imports are slow: torch)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    line = " ".join(doc.strip().split("\n\n")[0].split()).rstrip(":")
    return line if len(line) <= 100 else line[:line.rfind(" ", 0, 97)] + " ..."


def version_text() -> str:
    """detres's version and that of the libraries whose versions matter to results."""
    import torch
    import torchvision

    return (f"detres {detres.__version__} ({Path(__file__).resolve().parent})\n"
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, Python {sys.version.split()[0]}")


def usage() -> str:
    rows = "\n".join(f"  {verb:<13} {summary(path)}" for verb, path in available().items())
    return ("usage: detres <command> [options] [KEY=VALUE ...]\n\n"
            "One command per tool in tools/ (`detres infer ...` is `python tools/infer.py ...`).\n"
            "`detres <command> --help` explains each option.\n\ncommands:\n"
            f"{rows}\n\n  --version     print detres's, torch's and torchvision's versions\n")


def main(argv: list[str] | None = None) -> None:
    """The console entry point `detres`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv == ["help"]:
        print(usage(), end="")
        sys.exit(0 if argv else 2)
    if argv[0] == "help" and len(argv) > 1:  # `detres help infer` = `detres infer --help`
        argv = [argv[1], "--help"]
    if argv[0] in ("--version", "-V"):
        print(version_text())
        sys.exit(0)
    run_main(lambda: run(argv[0], argv[1:]))
