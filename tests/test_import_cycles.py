"""No two modules of the package import each other, directly or through others (function-level imports included;
imports under `if TYPE_CHECKING:` are annotations, not imports, and are left out): a circle is the sign of a job
split in the wrong place (engine/trainer.py and engine/stepwise.py had one)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_layering import PACKAGE, _imported_modules  # noqa: E402


def module_graph(package_dir: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (`from detres.x import name` counts as importing detres.x)."""
    paths = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent).with_suffix("")
        is_package = relative.name == "__init__"
        paths[".".join(relative.parts[:-1] if is_package else relative.parts)] = (path, is_package)
    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in paths.items():
        graph[module] = set()
        tree = _without_type_checking_blocks(ast.parse(path.read_text()))
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        for _, target in _imported_modules(tree, module, is_package):
            # `from detres.engine import trainer` imports the module detres.engine.trainer
            candidates = [f"{target}.{name}" for name in names if f"{target}.{name}" in paths] or [target]
            for candidate in candidates:
                while candidate and candidate not in paths:  # a name imported from a module: the module
                    candidate = candidate.rsplit(".", 1)[0] if "." in candidate else ""
                if candidate and candidate != module:
                    graph[module].add(candidate)
    return graph


def _without_type_checking_blocks(tree: ast.Module) -> ast.Module:
    """The module with its `if TYPE_CHECKING:` blocks removed (imports there run only under a type checker)."""
    class Strip(ast.NodeTransformer):
        def visit_If(self, node: ast.If):  # noqa: N802 (ast's visitor naming)
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            return None if name == "TYPE_CHECKING" else self.generic_visit(node)

    return Strip().visit(tree)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(module_graph(PACKAGE)) == []


def test_a_planted_circle_is_found(tmp_path):
    package = tmp_path / "detres"
    (package / "engine").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "engine" / "__init__.py").write_text("")
    (package / "engine" / "trainer.py").write_text("def f():\n    from detres.engine.stepwise import g\n")
    (package / "engine" / "stepwise.py").write_text("from detres.engine import trainer\n")
    (package / "engine" / "loop.py").write_text("from detres.engine.trainer import f\n")  # one way only: fine
    assert cycles(module_graph(package)) == [["detres.engine.stepwise", "detres.engine.trainer"]]
