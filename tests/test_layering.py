"""The package imports downward only: a module may import its own layer and the layers below, never one above.

The order, lowest first, and why each layer sits where it does:
- errors, then config and boxes: plain types every layer uses;
- io (checkpoint files), distributed (process-group helpers), vis (drawing), cli (a tool's error handling):
  services with no knowledge of models or data;
- ops: tensor operators written here, used by the model and by exported graphs;
- data: readers, transforms and loaders;
- modeling: the ResNet family and the detector, fed by data's conventions;
- evaluation: metrics, which read data's records and the model's outputs;
- analysis: reports built on the metrics;
- localization: the App. C system, built from modeling and evaluated by evaluation;
- deploy: export and runtimes of a built model, which the engine's inference loop may drive;
- engine: training and inference loops over all of the above;
- serve: the HTTP server (`detres serve`), which runs the engine's inference functions behind a queue;
- perf: the benchmark, which times everything and which nothing in the product imports;
- commands, __main__: the `detres <verb>` entry point, which runs the tools.
tools/ sits above all of them and is not checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detres"

LAYERS = [
    ["errors"],
    ["config", "boxes"],
    ["io", "distributed", "vis", "cli"],
    ["ops"],
    ["data"],
    ["modeling"],
    ["evaluation"],
    ["analysis"],
    ["localization"],
    ["deploy"],
    ["engine"],
    ["serve"],
    ["perf"],
    ["commands", "__main__"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _layer(module: str) -> str | None:
    """'detres.modeling.rpn' -> 'modeling'; None for modules outside detres and for detres itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "detres" and len(parts) > 1 else None


def _imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, function-level imports included."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from detres import distributed` imports the module detres.distributed
            found += [(node.lineno, f"{target}.{alias.name}" if target == "detres" else target)
                      for alias in node.names]
    return found


def upward_imports(package_dir: Path) -> list[str]:
    """Every import in the package at `package_dir` that reaches a higher layer, or a layer not in LAYERS."""
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent).with_suffix("")
        is_package = relative.name == "__init__"
        module = ".".join(relative.parts[:-1] if is_package else relative.parts)
        own = _layer(module)
        if own is None:
            continue
        if own not in RANK:
            problems.append(f"{path}: the layer '{own}' is not in LAYERS; place it in the order")
            continue
        for line, target in _imported_modules(ast.parse(path.read_text()), module, is_package):
            theirs = _layer(target)
            if theirs is None or theirs == own:
                continue
            if theirs not in RANK or RANK[theirs] > RANK[own]:
                problems.append(f"{path}:{line}: {own} imports {target}, a higher layer")
    return problems


def test_the_package_imports_only_downward():
    assert upward_imports(PACKAGE) == []


def test_a_planted_upward_import_is_found(tmp_path):
    package = tmp_path / "detres"
    (package / "data").mkdir(parents=True)
    (package / "engine").mkdir()
    (package / "__init__.py").write_text("")
    (package / "engine" / "trainer.py").write_text("from detres.data import loader\n")  # downward: fine
    (package / "data" / "loader.py").write_text("import os\n\n\ndef f():\n    from ..engine import trainer\n")
    (package / "data" / "readers.py").write_text("from detres import distributed\nfrom detres.engine import x\n")
    assert upward_imports(package) == [
        f"{package / 'data' / 'loader.py'}:5: data imports detres.engine, a higher layer",
        f"{package / 'data' / 'readers.py'}:2: data imports detres.engine, a higher layer",
    ]


def test_a_layer_missing_from_the_order_is_named(tmp_path):
    package = tmp_path / "detres"
    (package / "newroom").mkdir(parents=True)
    (package / "newroom" / "thing.py").write_text("")
    assert upward_imports(package) == [f"{package / 'newroom' / 'thing.py'}: the layer 'newroom' is not in LAYERS; "
                                       "place it in the order"]
