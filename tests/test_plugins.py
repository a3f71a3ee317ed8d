"""Your own model and dataset without forking: registered from a folder outside the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import read_metrics, run_cli

PLUGIN = '''
"""A user's own network and data, registered with cnn-train's decorators."""
import torch
from torch import nn

from cnn_train.data import InMemoryDataset, LabelledImages, register_dataset
from cnn_train.models import register_model


@register_model("tinynet", min_size={"imagenet": 4})
def tinynet(num_classes: int, variant: str) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, num_classes),
    )


def _stripes(count: int, generator: torch.Generator) -> LabelledImages:
    labels = torch.arange(count) % 2
    images = torch.randint(0, 60, (count, 3, 8, 8), generator=generator, dtype=torch.uint8)
    images[labels == 0, :, ::2, :] += 180  # horizontal stripes
    images[labels == 1, :, :, ::2] += 180  # vertical stripes
    return LabelledImages(images, labels)


@register_dataset("stripes")
def stripes(cfg) -> InMemoryDataset:
    generator = torch.Generator().manual_seed(7)
    return InMemoryDataset(
        splits={"train": _stripes(96, generator), "val": _stripes(32, generator)},
        class_names=["horizontal", "vertical"],
        native_size=8,
        mean=(0.5, 0.5, 0.5),
        std=(0.3, 0.3, 0.3),
    )
'''
MODEL_YAML = """\
# tinynet: the user's own model (registered by mynet_plugin).
defaults:
  - /schema/model/base@_here_
  - _self_

name: tinynet
"""
DATA_YAML = """\
# stripes: the user's own dataset (registered by mynet_plugin).
defaults:
  - /schema/data/base@_here_
  - _self_

name: stripes
batch_size: 16
"""
SCRIPT = """\
import mynet_plugin  # registers tinynet and stripes
from cnn_train.cli import train

if __name__ == "__main__":
    train()
"""


def user_folder(root: Path, *, entry_point: bool) -> tuple[Path, dict[str, str]]:
    """A folder outside the package with the plugin module, its configs and (maybe) metadata."""
    site = root / "site"
    site.mkdir(parents=True)
    (site / "mynet_plugin.py").write_text(PLUGIN)
    if entry_point:  # what `pip install` of a package declaring the entry point leaves behind
        dist_info = site / "mynet_plugin-0.1.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: mynet-plugin\nVersion: 0.1\n"
        )
        (dist_info / "entry_points.txt").write_text("[cnn_train.plugins]\ntinynet = mynet_plugin\n")
    configs = root / "my_configs"
    (configs / "model").mkdir(parents=True)
    (configs / "data").mkdir()
    (configs / "model" / "tinynet.yaml").write_text(MODEL_YAML)
    (configs / "data" / "stripes.yaml").write_text(DATA_YAML)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return configs, env


@pytest.mark.slow
def test_a_plugin_package_trains_resumes_evaluates_and_exports_like_a_built_in(
    tmp_path: Path,
) -> None:
    configs, env = user_folder(tmp_path, entry_point=True)
    common = [f"hydra.searchpath=[file://{configs}]", "model=tinynet", "data=stripes"]
    run = [*common, "device=cpu", "hydra.run.dir=run", "optimizer.lr=0.05"]

    first = run_cli("cnn-train", *run, "trainer.epochs=2", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    resumed = run_cli("cnn-train", *run, "trainer.epochs=4", "resume=auto", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    records = read_metrics(tmp_path / "run")
    assert [record["epoch"] for record in records] == [0, 1, 2, 3]
    assert max(record["val_acc1"] for record in records) > 0.9  # stripes are easy to tell apart

    best = tmp_path / "run" / "checkpoints" / "best.pt"
    evaluated = run_cli(
        "cnn-eval", f"checkpoint={best}", "hydra.run.dir=eval", cwd=tmp_path, env=env
    )
    assert evaluated.returncode == 0, evaluated.stderr
    best_acc1 = max(record["val_acc1"] for record in records)
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["acc1"] == best_acc1

    exported = run_cli(
        "cnn-export", f"checkpoint={best}", "format=torchscript", cwd=tmp_path, env=env
    )
    assert exported.returncode == 0, exported.stderr
    scripted = torch.jit.load(str(best.with_suffix(".ts")))
    assert scripted(torch.zeros(1, 3, 8, 8)).shape == (1, 2)

    table = run_cli("cnn-summary", *common, cwd=tmp_path, env=env)
    assert table.returncode == 0, table.stderr
    assert "tinynet" in table.stdout and "total" in table.stdout


def test_without_the_plugin_its_names_are_a_one_line_error(tmp_path: Path) -> None:
    configs, env = user_folder(tmp_path, entry_point=False)
    done = run_cli(
        "cnn-train",
        f"hydra.searchpath=[file://{configs}]",
        "model=tinynet",
        "data=stripes",
        "device=cpu",
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown dataset 'stripes'")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("device", ["cpu", pytest.param("ddp", marks=pytest.mark.slow)])
def test_a_script_that_registers_then_calls_train_runs_every_device(
    tmp_path: Path, device: str
) -> None:
    configs, env = user_folder(tmp_path, entry_point=False)
    (tmp_path / "train_mine.py").write_text(SCRIPT)
    extra = ["device.num_procs=2"] if device == "ddp" else []
    done = subprocess.run(
        [
            sys.executable,
            "train_mine.py",
            f"hydra.searchpath=[file://{configs}]",
            "model=tinynet",
            "data=stripes",
            f"device={device}",
            *extra,
            "trainer.epochs=1",
            "hydra.run.dir=run",
        ],
        cwd=tmp_path,
        env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["config"]["model"]["name"] == "tinynet"
    assert "best val top-1" in done.stdout
