"""Every model option learns the default data with nothing but `model=NAME` on the command line."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from tests.helpers import console_script

MODEL_OPTIONS = sorted(
    path.name.removesuffix(".yaml")
    for path in (resources.files("cnn_train.configs") / "model").iterdir()
    if path.name.endswith(".yaml")
)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_OPTIONS)
def test_each_model_reaches_97_percent_on_the_default_data(tmp_path: Path, name: str) -> None:
    done = subprocess.run(
        [console_script("cnn-train"), f"model={name}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = tmp_path.glob("outputs/*/*/result.json")
    assert json.loads(result.read_text())["best_val_acc1"] >= 0.97
