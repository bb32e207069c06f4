"""Nothing read from a file or the command line runs as code: a scan of the sources, and the override path.

test_security_checkpoint.py shows that load_checkpoint refuses a crafted pickle; this scan shows that every
torch.load in detres/ and tools/ is such a safe load, and that no code path evaluates text (eval, exec, unsafe
yaml, pickle), so a new call cannot slip in unnoticed.
"""

import ast
from pathlib import Path

import pytest

from detres.config import load_config
from detres.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "detres").rglob("*.py"), *(REPO / "tools").glob("*.py")])
UNSAFE_CALLS = {("eval",), ("exec",), ("compile",), ("pickle", "load"), ("pickle", "loads"), ("yaml", "load"),
                ("yaml", "unsafe_load"), ("yaml", "full_load"), ("marshal", "loads"), ("dill", "load")}


def _dotted(func: ast.expr) -> tuple[str, ...]:
    """("torch", "load") for torch.load, ("eval",) for eval; () for anything else."""
    if isinstance(func, ast.Name):
        return (func.id,)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return (func.value.id, func.attr)
    return ()


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node, _dotted(node.func)


def test_the_scan_sees_the_sources():
    names = {p.name for p in SOURCES}
    assert {"checkpoint.py", "infer.py", "config.py"} <= names and len(SOURCES) > 40


def test_every_torch_load_is_a_weights_only_load():
    found = []
    for path in SOURCES:
        for node, name in _calls(path):
            if name == ("torch", "load"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                found.append((f"{path.relative_to(REPO)}:{node.lineno}", safe))
    assert found, "no torch.load found: the scan is broken"
    assert [where for where, safe in found if not safe] == []


def test_no_source_evaluates_text_as_code():
    unsafe = [f"{path.relative_to(REPO)}:{node.lineno} {'.'.join(name)}" for path in SOURCES
              for node, name in _calls(path) if name in UNSAFE_CALLS]
    assert unsafe == []


def test_an_override_with_a_python_tag_stays_text_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    for value in (payload, f"[{payload}]"):
        with pytest.raises(ConfigError, match="solver.steps"):  # a list key: the text is no list
            load_config(None, [f"solver.steps={value}"])
    assert load_config(None, [f"output.dir={payload}"]).output.dir == payload  # a text key: kept as text
    assert not marker.exists()
