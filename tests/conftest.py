"""Shared fixtures: compose the packaged configs as the CLI does, and run jobs in-process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from cnn_train.schema import register_configs

register_configs()

QUICK = [
    "data=synthetic",
    "data.native_size=8",
    "data.train_samples=64",
    "data.val_samples=32",
    "data.batch_size=16",
    "trainer.epochs=1",
    "device=cpu",
]


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose `configs/<name>.yaml` from the installed package with command-line overrides."""
    with initialize_config_module(config_module="cnn_train.configs", version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture
def train_config() -> Callable[..., DictConfig]:
    """Compose a quick CPU training config (synthetic 8 px data, one epoch) plus overrides."""

    def make(*overrides: str) -> DictConfig:
        return compose_config("train", [*QUICK, *overrides])

    return make


def console_script(name: str) -> str:
    """The path of an installed console script next to this interpreter."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else (shutil.which(name) or name)


def run_cli(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run an installed console script in `cwd` and capture its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [console_script(name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
