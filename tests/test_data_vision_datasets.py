"""The torchvision datasets (CIFAR-10, CIFAR-100, MNIST, Fashion-MNIST), on small files written
in their published formats: each trains and evaluates, and missing files say where and how to get
them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torchvision.datasets import cifar

from cnn_train.build import build_model_and_data
from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from tests.helpers import compose_config, run_cli
from tests.helpers.datasets import SHORT, made, train_cfg, write_cifar, write_mnist


@pytest.fixture
def no_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our CIFAR files are not the published ones: accept any file that exists (this test only)."""
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


@pytest.mark.parametrize(
    ("name", "classes", "train", "test"), [("cifar10", 10, 50, 10), ("cifar100", 100, 200, 100)]
)
def test_cifar_configs_train_and_evaluate_on_test(
    name: str, classes: int, train: int, test: int, tmp_path: Path, no_checksums: None
) -> None:
    write_cifar(tmp_path / "data", classes, train // (5 if classes == 10 else 1) // classes, 1)
    cfg = train_cfg(f"data={name}", f"data.root={tmp_path / 'data'}", "data.val_fraction=0.5")
    run_training(cfg, made(tmp_path / "run"))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 2
    built = build_model_and_data(cfg.model, cfg.data)
    sizes = {split: len(data) for split, data in built.dataset.splits.items()}
    assert sizes == {"train": train - train // 2, "val": train // 2, "test": test}
    assert built.image_size == 32 and len(built.dataset.class_names) == classes
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    overrides = [f"checkpoint={checkpoint}", "device=cpu", "data.split=test"]
    result = eval_checkpoint(compose_config("eval", overrides), made(tmp_path / "eval"))
    assert result["split"] == "test" and result["samples"] == test


@pytest.mark.parametrize("name", ["mnist", pytest.param("fashion_mnist", marks=pytest.mark.slow)])
def test_mnist_configs_train_through_the_cli(name: str, tmp_path: Path) -> None:
    write_mnist(tmp_path / "data", "MNIST" if name == "mnist" else "FashionMNIST")
    result = run_cli(
        "cnn-train",
        f"data={name}",
        "data.root=data",
        "data.val_fraction=0.5",
        *SHORT,
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "28 px: 20 train / 20 val images" in result.stderr + result.stdout
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert len(state["class_names"]) == 10


def test_missing_vision_files_say_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cifar-10-batches-py.*data\.download=true"):
        build_model_and_data(*_model_data(train_cfg("data=cifar10", f"data.root={tmp_path}")))


def _model_data(cfg):
    return cfg.model, cfg.data
