"""Folder datasets decoded once into memory and batched from there, and those that still stream."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import cnn_train.data.decode as decode_module
from cnn_train.build import build_model_and_data, split_loader
from cnn_train.data.decode import decode_files
from cnn_train.data.memory import InMemoryLoader
from cnn_train.data.stream import StreamLoader
from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.trainer import run_training
from tests.helpers import compose_config, read_metrics, write_tree
from tests.helpers.datasets import add_bad_files

CPU = torch.device("cpu")


def folder(root: Path, *overrides: str):
    """A quick CIFAR-recipe run over the class-folder tree at `root`."""
    return compose_config(
        "train",
        [
            "data=cifar10_folder",
            f"data.root={root}",
            "data.val_fraction=0.25",
            "data.batch_size=4",
            "data.num_workers=0",
            "trainer.epochs=1",
            "device=cpu",
            *overrides,
        ],
    )


def batches(loader, epoch: int) -> list[torch.Tensor]:
    loader.set_epoch(epoch)
    return [images for images, _ in loader]


def test_a_folder_that_fits_is_read_once_then_batched_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_tree(tmp_path / "tree", per_class=8)
    reads: list[str] = []
    read = decode_module._read_rgb
    monkeypatch.setattr(decode_module, "_read_rgb", lambda path: reads.append(path) or read(path))
    cfg = folder(tmp_path / "tree")
    built = build_model_and_data(cfg.model, cfg.data)
    with caplog.at_level(logging.INFO):
        loader = split_loader(built, "train", 4, CPU, train=True, seed=1)
    assert isinstance(loader, InMemoryLoader)
    assert "decoded the train split once: 12 images at 32 px" in caplog.text
    first = [batches(loader, epoch) for epoch in range(3)]
    assert sorted(reads) == sorted(built.dataset.splits["train"].paths)
    # order and augmentation depend on (seed, epoch) only: a fresh loader repeats epoch 2
    again = split_loader(
        build_model_and_data(cfg.model, cfg.data), "train", 4, CPU, train=True, seed=1
    )
    for a, b in zip(first[2], batches(again, 2), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(first[1], first[2], strict=True))


def test_decoded_validation_batches_equal_the_streamed_ones(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", per_class=8)
    outputs = []
    for in_memory in ("auto", "false"):
        cfg = folder(tmp_path / "tree", "data.image_size=40", f"data.in_memory={in_memory}")
        built = build_model_and_data(cfg.model, cfg.data)
        loader = split_loader(built, "val", 3, CPU, train=False)
        assert isinstance(loader, InMemoryLoader if in_memory == "auto" else StreamLoader)
        outputs.append(batches(loader, 0))
    assert len(outputs[0]) == len(outputs[1]) == 2
    for decoded, streamed in zip(*outputs, strict=True):
        assert decoded.shape[-1] == 40 and torch.equal(decoded, streamed)


def test_a_folder_over_the_budget_or_with_a_per_image_preset_streams(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", per_class=8)
    cfg = folder(tmp_path / "tree")
    built = build_model_and_data(cfg.model, cfg.data)
    assert built.dataset.decoded_mb(32) == pytest.approx(16 * 3 * 32 * 32 / 1e6)
    built.dataset.decode_budget_mb = built.dataset.decoded_mb(32) / 2
    assert isinstance(split_loader(built, "train", 4, CPU, train=True), StreamLoader)
    cfg = folder(tmp_path / "tree", "data.augment=imagenet")
    built = build_model_and_data(cfg.model, cfg.data)
    assert isinstance(split_loader(built, "train", 4, CPU, train=True), StreamLoader)


def test_bad_files_are_left_out_once_and_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_tree(tmp_path / "tree", per_class=10)
    bad = add_bad_files(tmp_path / "tree" / "cat")
    cfg = folder(tmp_path / "tree", "data.max_bad_fraction=0.5", "trainer.max_steps=2")
    with caplog.at_level(logging.WARNING):
        run_training(cfg, tmp_path / "run")
    built = build_model_and_data(cfg.model, cfg.data)
    train_files = set(built.dataset.splits["train"].paths)
    expected = [path for path in bad if str(path) in train_files]
    assert expected, "the split should keep some bad files in train"
    for path in bad:
        assert str(path) in caplog.text
    assert f"skipped {len(expected)} unreadable image files" in caplog.text
    assert read_metrics(tmp_path / "run")[0]["skipped_files"] == len(expected)


def test_cnn_eval_reproduces_a_decoded_folder_run(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", per_class=8)
    run_training(folder(tmp_path / "tree", "trainer.epochs=2"), tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    cfg = compose_config("eval", [f"checkpoint={checkpoint}", "device=cpu"])
    (tmp_path / "eval").mkdir()
    evaluated = eval_checkpoint(cfg, tmp_path / "eval")
    last = read_metrics(tmp_path / "run")[-1]
    assert evaluated["samples"] == 4
    assert evaluated["acc1"] == last["val_acc1"] and evaluated["loss"] == last["val_loss"]


def test_the_decoded_images_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", per_class=70)  # more files than one pool task takes
    paths = sorted(str(path) for path in (tmp_path / "tree").rglob("*.*"))
    (tmp_path / "tree" / "cat" / "zero.jpg").write_bytes(b"")
    paths.insert(5, str(tmp_path / "tree" / "cat" / "zero.jpg"))
    one, failures_one = decode_files(paths, 24, threads=1, desc="decoding")
    two, failures_two = decode_files(paths, 24, threads=2, desc="decoding")
    assert torch.equal(one, two) and one.shape == (len(paths), 3, 24, 24)
    assert list(failures_one) == list(failures_two) == [5]
    assert "zero.jpg (empty file)" in failures_one[5]
