"""The config of a tool that is given a checkpoint: `--cfg` optional, the checkpoint's own resolved config.

Every detres checkpoint holds the resolved config it was trained with (detres/io/checkpoint.py), so someone
given only `model_final.pth` can test it, run it on photos or export it. An explicit `--cfg` wins, and the log
says which config was used.
"""

from __future__ import annotations

import argparse
import logging
import os

from detres.config import Config, config_from_stored, load_config
from detres.errors import CheckpointError, ConfigError
from detres.io.checkpoint import load_checkpoint

log = logging.getLogger("detres.cli")
CFG_HELP = ("YAML config file, e.g. configs/demo.yaml (default: the resolved config stored in the --ckpt "
            "checkpoint; an explicit --cfg wins over it)")


def add_cfg_from_ckpt(parser: argparse.ArgumentParser) -> None:
    """--cfg, optional because the checkpoint holds its config."""
    parser.add_argument("--cfg", default=None, metavar="YAML", help=CFG_HELP)


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """--cfg, --ckpt and --model of a tool that runs one detector (infer, serve): a checkpoint or an export folder."""
    parser.add_argument("--cfg", default=None, metavar="YAML",
                        help=CFG_HELP + "; with --model, the config stored in the export folder")
    parser.add_argument("--ckpt", default="", metavar="PTH",
                        help="trained detection checkpoint, e.g. runs/demo/model_final.pth (default: none, give "
                             "--model)")
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="a tools/export.py folder, run with test.backend=onnxruntime|openvino, e.g. "
                             "runs/demo_export (default: none, use --ckpt)")


def config_for_checkpoint(cfg_path: str | os.PathLike | None, ckpt: str | os.PathLike | None,
                          overrides: list[str] | None = None) -> Config:
    """--cfg when given (logged as the winner), else the config stored in `ckpt`; KEY=VALUE overrides on top.

    A checkpoint without a config (a torchvision state dict, another toolkit's file) is a CheckpointError that
    asks for --cfg.
    """
    if cfg_path:
        if ckpt:
            log.info("config: %s (--cfg given: it wins over the config stored in %s)", cfg_path, ckpt)
        return load_config(cfg_path, overrides)
    if not ckpt:
        raise ConfigError("no config: give --cfg FILE (or a detres checkpoint, which holds its config)")
    state = load_checkpoint(ckpt)
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{ckpt} holds no config (not a detres training checkpoint, or a plain state dict); "
                              "give the YAML it was trained with: --cfg FILE")
    log.info("config: the one stored in %s (give --cfg FILE to use another)", ckpt)
    return config_from_stored(state["config"], overrides, where=f"config stored in {ckpt}")
