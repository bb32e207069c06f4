"""Typed config: _base_ inheritance, overrides, and one clear error per mistake."""

import pytest

from detres.config import config_from_dict, config_to_dict, default_config, load_config, save_config
from detres.errors import ConfigError


def _write(path, text):
    path.write_text(text)
    return path


def test_base_inheritance_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", "solver: {base_lr: 0.1, steps: [10, 20]}\nmodel: {backbone: {depth: 50}}\n")
    child = _write(tmp_path / "child.yaml", "_base_: base.yaml\nsolver: {base_lr: 0.05}\n")
    cfg = load_config(child, ["model.backbone.depth=101", "solver.steps=[5]", "output.dir=/tmp/x"])
    assert cfg.solver.base_lr == 0.05 and cfg.solver.steps == [5]
    assert cfg.model.backbone.depth == 101 and cfg.output.dir == "/tmp/x"
    assert cfg.solver.momentum == 0.9  # untouched defaults stay


def test_unknown_key_names_the_nearest_valid_one(tmp_path):
    path = _write(tmp_path / "bad.yaml", "solver:\n  base_lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*'solver.base_lrr'.*did you mean 'solver.base_lr'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"did you mean 'model.backbone.depth'"):
        load_config(None, ["model.backbone.dept=50"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"solver.base_lr"):
        load_config(None, ["solver.base_lr=fast"])
    with pytest.raises(ConfigError, match=r"'model' is a section"):
        load_config(None, ["model=3"])


def test_missing_file_missing_base_and_cycle(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    orphan = _write(tmp_path / "orphan.yaml", "_base_: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"gone.yaml.*named as _base_ in"):
        load_config(orphan)
    _write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(tmp_path / "a.yaml")


def test_bad_yaml_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path / "x.yaml", "solver: [unclosed\n"))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["solver.base_lr"])


def test_python_tags_are_never_executed(tmp_path):
    path = _write(tmp_path / "evil.yaml", "output: {dir: !!python/object/apply:os.getcwd []}\n")
    with pytest.raises(ConfigError):
        load_config(path)


def test_round_trip_through_checkpoint_dict_and_yaml(tmp_path):
    cfg = load_config(None, ["solver.base_lr=0.02", "model.rpn.anchor_sizes=[32,64]"])
    assert config_from_dict(config_to_dict(cfg)) == cfg
    save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_a_checkpoint_config_with_a_retired_key_still_loads():
    stored = config_to_dict(default_config())
    stored["model"]["rpn"]["loss_weight"] = 1.0  # written by an older detres
    assert config_from_dict(stored).model.rpn.nms_thresh == 0.7
    stored["model"]["rpn"]["no_such_key"] = 1.0  # anything else unknown is still an error
    with pytest.raises(ConfigError, match="no_such_key"):
        config_from_dict(stored)
