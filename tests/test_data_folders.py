"""Image-folder datasets, on small files written in the real formats: every image mode trains,
bad files are skipped up to a limit, val and test folders are used, bad layouts and settings are
refused naming the key, real CIFAR-10 JPEGs load, and the ImageNet val helper sorts a flat folder
into classes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnn_train.build import build_model_and_data
from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from tests.helpers import compose_config, run_cli, write_image, write_tree
from tests.helpers.datasets import SHORT, add_bad_files, made, train_cfg

CIFAR10_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "train"


def test_folder_of_every_image_mode_trains_and_skips_bad_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_tree(tmp_path / "tree", per_class=10)
    bad = add_bad_files(tmp_path / "tree" / "cat")
    cfg = train_cfg(
        "data=cifar10_folder",
        f"data.root={tmp_path / 'tree'}",
        "data.val_fraction=0.25",
        "data.max_bad_fraction=0.5",
        "data.num_workers=0",
        "data.batch_size=16",
        "data.in_memory=false",
        "trainer.max_steps=1",
    )
    with caplog.at_level(logging.WARNING):
        run_training(cfg, made(tmp_path / "run"))
    built = build_model_and_data(cfg.model, cfg.data)
    assert built.dataset.class_names == ["cat", "dog"] and built.image_size == 32
    train_files = set(built.dataset.splits["train"].paths)
    expected = [path for path in bad if str(path) in train_files]
    assert expected, "the split should keep some bad files in train"
    for path in expected:
        assert str(path) in caplog.text
    assert f"skipped {len(expected)} unreadable image files" in caplog.text
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert [e.value for e in events.Scalars("vitals/skipped_files")] == [len(expected)]


@pytest.mark.parametrize("in_memory", ["false", "auto"])
def test_too_many_bad_files_stop_the_run(tmp_path: Path, in_memory: str) -> None:
    write_tree(tmp_path / "tree", per_class=10)
    add_bad_files(tmp_path / "tree" / "cat")
    cfg = train_cfg(
        "data=cifar10_folder",
        f"data.root={tmp_path / 'tree'}",
        "data.batch_size=4",
        f"data.in_memory={in_memory}",
    )
    with pytest.raises(UserError, match=r"data\.max_bad_fraction=0\.01"):
        run_training(cfg, made(tmp_path / "run"))


@pytest.mark.slow
def test_folder_with_val_and_test_and_eval_checks_class_names(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        write_tree(tmp_path / "tree" / split, per_class=4)
    result = run_cli(
        "cnn-train",
        "data=folder",
        f"data.root={tmp_path / 'tree'}",
        "data.image_size=64",
        "data.num_workers=1",
        *SHORT,
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "64 px: 8 train / 8 val images" in result.stderr + result.stdout
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    test = run_cli("cnn-eval", f"checkpoint={checkpoint}", "data.split=test", cwd=tmp_path)
    assert test.returncode == 0, test.stderr
    assert json.loads(test.stdout.splitlines()[-1])["samples"] == 8
    write_tree(tmp_path / "other", classes=("cow", "hen"), per_class=4)
    wrong = compose_config("eval", [f"checkpoint={checkpoint}", f"data.root={tmp_path / 'other'}"])
    with pytest.raises(UserError, match="classes"):
        eval_checkpoint(wrong, made(tmp_path / "eval"))


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda root: None, "is not a directory"),
        (lambda root: root.mkdir(), "no class folders"),
        (lambda root: (root / "cat").mkdir(parents=True), "is empty"),
    ],
)
def test_bad_folder_layouts_show_the_expected_layout(tmp_path: Path, setup, match: str) -> None:
    root = tmp_path / "tree"
    setup(root)
    cfg = train_cfg("data=folder", f"data.root={root}")
    with pytest.raises(UserError, match=rf"{match}.*expected root/<class>/<image>"):
        build_model_and_data(cfg.model, cfg.data)


def test_folder_needs_a_root() -> None:
    cfg = train_cfg("data=folder")
    with pytest.raises(UserError, match=r"data\.root is required"):
        build_model_and_data(cfg.model, cfg.data)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("data.augment=fancy", "data.augment=fancy is not one of"),
        ("data.in_memory=maybe", "data.in_memory must be one of auto, true, false, got maybe"),
        ("data.max_bad_fraction=1.5", "data.max_bad_fraction must be"),
    ],
)
def test_bad_data_settings_name_the_key(override: str, match: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=match):
        run_training(train_cfg("data=synthetic", "data.native_size=8", override), tmp_path)


def test_in_memory_true_refuses_a_per_image_preset(tmp_path: Path) -> None:
    cfg = train_cfg("data=synthetic", "data.augment=imagenet", "data.in_memory=true")
    with pytest.raises(UserError, match=r"data\.in_memory=true needs"):
        run_training(cfg, tmp_path)


@pytest.mark.skipif(not CIFAR10_JPEG.is_dir(), reason=f"real CIFAR-10 JPEGs not at {CIFAR10_JPEG}")
def test_real_cifar10_jpegs_load_as_a_folder(tmp_path: Path) -> None:
    cfg = train_cfg(
        "data=cifar10_folder",
        f"data.root={CIFAR10_JPEG}",
        "data.max_per_class=20",
        "data.num_workers=0",
    )
    run_training(cfg, made(tmp_path / "run"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["class_names"][:3] == ["airplane", "automobile", "bird"]
    built = build_model_and_data(cfg.model, cfg.data)
    assert len(built.dataset.splits["train"]) == 180 and len(built.dataset.splits["val"]) == 20


def test_imagenet_val_helper_sorts_the_flat_folder_into_classes(tmp_path: Path) -> None:
    import runpy

    val = tmp_path / "imagenet" / "val"
    val.mkdir(parents=True)
    wnids = ["n01440764", "n01443537"]
    lines = []
    for i in range(4):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        write_image(val / name, "RGB", seed=i)
        lines.append(f"{name} {wnids[i % 2]}")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    write_tree(tmp_path / "imagenet" / "train", classes=tuple(wnids), per_class=2)
    script = Path(__file__).resolve().parents[1] / "scripts" / "prepare_imagenet_val.py"
    module = runpy.run_path(str(script))
    module["main"]([str(val), "--labels", str(tmp_path / "labels.txt")])
    assert sorted(p.name for p in val.iterdir()) == wnids
    cfg = train_cfg(
        "data=imagenet",
        f"data.root={tmp_path / 'imagenet'}",
        "data.image_size=64",
        "data.batch_size=2",
        "data.num_workers=0",
    )
    built = build_model_and_data(cfg.model, cfg.data)
    assert len(built.dataset.splits["val"]) == 4 and built.dataset.class_names == wnids
    run_training(cfg, made(tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
