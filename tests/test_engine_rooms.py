"""detres/engine holds two rooms: the training loops and the inference loops. Inference code imports no training
code (training imports inference: it evaluates with it), so a reader of "what runs at test time" never needs the
trainers, and the inference loops can move to a layer of their own without untangling anything."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "detres" / "engine"
INFERENCE = {"detection_export", "folder_inference", "infer_journal", "inference", "loading", "predictor",
             "tiled_inference"}
SHARED = {"memory", "run_dir"}  # process memory and run folders, used by both rooms
TRAINING = {"cls_trainer", "loc_trainer", "proposal_store", "soak", "solver", "stepwise", "train", "trainer"}


def _engine_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("detres.engine."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("detres.engine.")}
    return found


def test_every_engine_module_is_in_one_room():
    modules = {p.stem for p in ENGINE.glob("*.py")} - {"__init__"}
    assert modules == INFERENCE | SHARED | TRAINING
    assert not (INFERENCE & TRAINING or INFERENCE & SHARED or TRAINING & SHARED)


def test_inference_imports_no_training_module():
    for name in INFERENCE | SHARED:
        reached = _engine_imports(ENGINE / f"{name}.py") & TRAINING
        assert not reached, f"detres/engine/{name}.py (inference) imports training modules {sorted(reached)}"
