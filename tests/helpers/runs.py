"""Runs of the installed cnn-train that tests interrupt, resume and compare bit for bit."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import console_script, write_tree

# A 2-process DDP job of 3 epochs that saves mid-epoch: what the cluster tests interrupt.
CLUSTER_RUN = [
    "device=ddp",
    "data=synthetic",
    "data.native_size=8",
    "data.train_samples=64",
    "data.val_samples=31",
    "data.batch_size=8",
    "trainer.epochs=3",
    "trainer.checkpoint_every_steps=2",
    "resume=auto",
    "tracking.graph=false",
]
LONG_RUN = [
    "data=synthetic",
    "data.native_size=8",
    "data.train_samples=96",
    "data.val_samples=32",
    "data.batch_size=16",
    "trainer.epochs=3",
    "trainer.checkpoint_every_steps=2",
    "device=cpu",
    "tracking.graph=false",
]


def folder_run(root: Path) -> list[str]:
    """A run over a JPEG class-folder tree read by 2 DataLoader workers with random augmentation."""
    if not root.exists():
        write_tree(root, classes=("a", "b", "c", "d"), per_class=16)
    return [
        "data=cifar10_folder",
        f"data.root={root}",
        "data.num_workers=2",
        "data.val_fraction=0.25",
        "data.batch_size=8",
        "trainer.epochs=3",
        "trainer.checkpoint_every_steps=2",
        "device=cpu",
        "tracking.graph=false",
    ]


def start_training(
    run_dir: Path, *overrides: str, base: list[str] = LONG_RUN
) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [console_script("cnn-train"), *base, f"hydra.run.dir={run_dir}", *overrides],
        cwd=run_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_mid_epoch_checkpoint(process: subprocess.Popen[str], run_dir: Path) -> None:
    """Return once last.pt holds a mid-epoch state (the run is then known to be mid-way)."""
    path = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {process.stderr.read()}")
        if path.is_file():
            state = torch.load(path, weights_only=True)
            if not state["epoch_done"] and state["step"] >= 2:
                return
        time.sleep(0.01)
    pytest.fail("no mid-epoch checkpoint appeared")


def finish(run_dir: Path, *overrides: str, base: list[str] = LONG_RUN) -> None:
    process = start_training(run_dir, *overrides, base=base)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr


def assert_same_state(a: Path, b: Path) -> None:
    first = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    second = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert first["step"] == second["step"]
    for key, tensor in first["model"].items():
        torch.testing.assert_close(second["model"][key], tensor, rtol=0, atol=0)
    for index, state in first["optimizer"]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(
                second["optimizer"]["state"][index][name], value, rtol=0, atol=0
            )
