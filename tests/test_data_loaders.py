"""The loaders: ranks share samples (disjoint, equal, full training batches; every evaluation
sample once), augmented batches depend only on the seed and epoch (not on the workers), and the
in-memory and DataLoader paths agree on validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torchvision.datasets import cifar

from cnn_train.build import build_model_and_data, split_loader
from cnn_train.data.order import pass_indices
from cnn_train.engine.evaluation import eval_pass
from cnn_train.engine.precision import resolve_precision
from tests.helpers import write_tree
from tests.helpers.datasets import train_cfg, write_cifar


@pytest.fixture
def no_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our CIFAR files are not the published ones: accept any file that exists (this test only)."""
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_training_ranks_get_disjoint_equal_full_batches(world_size: int) -> None:
    parts = [
        pass_indices(103, train=True, batch_size=8, seed=1, epoch=2, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) % 8 == 0
    assert len(parts[0]) == (103 // world_size) // 8 * 8
    joined = torch.cat(parts)
    assert len(joined.unique()) == len(joined)
    other = pass_indices(103, train=True, batch_size=8, seed=1, epoch=3, world_size=world_size)
    assert not torch.equal(parts[0], other)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_ranks_together_read_every_sample_once(world_size: int) -> None:
    parts = [
        pass_indices(103, train=False, batch_size=8, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert sorted(torch.cat(parts).tolist()) == list(range(103))


def _loader_labels(loader) -> list[int]:
    return [label for _, labels in loader for label in labels.tolist()]


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_split_loader_shares_samples_between_ranks(in_memory: str) -> None:
    cfg = train_cfg("data=synthetic", "data.native_size=8", f"data.in_memory={in_memory}")
    built = build_model_and_data(cfg.model, cfg.data)
    device = torch.device("cpu")
    labels = built.dataset.splits["val"].labels
    for rank in range(3):
        loader = split_loader(built, "val", 10, device, train=False, rank=rank, world_size=3)
        assert _loader_labels(loader) == labels[rank::3].tolist()
    sizes = [
        len(split_loader(built, "train", 10, device, train=True, rank=r, world_size=3))
        for r in range(3)
    ]
    assert sizes == [len(built.dataset.splits["train"]) // 3 // 10] * 3


def _batches(loader, epoch: int) -> list[torch.Tensor]:
    loader.set_epoch(epoch)
    return [images for images, _ in loader]


def test_augmented_batches_do_not_depend_on_workers(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", per_class=6)
    outputs = []
    for workers in (0, 2):
        cfg = train_cfg(
            "data=folder", f"data.root={tmp_path / 'tree'}", "data.image_size=32",
            f"data.num_workers={workers}", "data.val_fraction=0.25",
        )  # fmt: skip
        built = build_model_and_data(cfg.model, cfg.data)
        loader = split_loader(built, "train", 4, torch.device("cpu"), train=True, seed=5)
        outputs.append(_batches(loader, 1) + _batches(loader, 2))
    for first, second in zip(*outputs, strict=True):
        assert torch.equal(first, second)
    assert not torch.equal(outputs[0][0], outputs[0][2])


def test_in_memory_batches_depend_only_on_seed_and_epoch() -> None:
    cfg = train_cfg("data=synthetic", "data.native_size=8", "data.augment=cifar")
    built = build_model_and_data(cfg.model, cfg.data)
    make = lambda: split_loader(built, "train", 16, torch.device("cpu"), train=True, seed=3)  # noqa: E731
    first, second = make(), make()
    _batches(first, 0)  # a pass over another epoch first must not change epoch 1
    for a, b in zip(_batches(first, 1), _batches(second, 1), strict=True):
        assert torch.equal(a, b)


def test_in_memory_and_dataloader_paths_agree_on_validation(
    tmp_path: Path, no_checksums: None
) -> None:
    write_cifar(tmp_path / "data", 10, 4, 1)
    results = []
    for in_memory in ("true", "false"):
        cfg = train_cfg(
            "data=cifar10", f"data.root={tmp_path / 'data'}", f"data.in_memory={in_memory}"
        )
        built = build_model_and_data(cfg.model, cfg.data)
        torch.manual_seed(0)
        model = build_model_and_data(cfg.model, cfg.data).model
        loader = split_loader(built, "val", 8, torch.device("cpu"), train=False)
        precision = resolve_precision("fp32", torch.device("cpu"))
        results.append(eval_pass(model, loader, len(loader), precision=precision, topk=5).read())
    assert results[0]["samples"] == results[1]["samples"] == 20
    assert results[0]["acc1"] == results[1]["acc1"]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)
