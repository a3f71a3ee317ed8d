"""Datasets, presets and loaders, on small files written in the real formats."""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.datasets import cifar

from cnn_train.build import build_model_and_data, split_loader
from cnn_train.data.order import pass_indices
from cnn_train.data.preprocessing import eval_preprocessing
from cnn_train.data.transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LIGHTING_STD,
    PRESETS,
    Lighting,
    Normalize,
    augment_batch,
    image_transform,
)
from cnn_train.engine.evaluation import eval_pass
from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.precision import resolve_precision
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from tests.helpers import compose_config, run_cli, write_image, write_tree

CIFAR10_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "train"
SHORT = [
    "trainer.epochs=1",
    "trainer.max_steps=2",
    "trainer.limit_val_batches=1",
    "data.batch_size=8",
    "device=cpu",
]


def made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def train_cfg(*overrides: str):
    return compose_config("train", [*SHORT, *overrides])


# --- files in the published formats -------------------------------------------------------------


def _pixels(rng: np.random.Generator, count: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, (count, *shape), dtype=np.uint8)


def write_cifar(root: Path, classes: int, train_per_class: int, test_per_class: int) -> None:
    """CIFAR-10 (5 data batches) or CIFAR-100 (one train file) python pickles under root."""
    rng = np.random.default_rng(0)
    ten = classes == 10
    folder = root / ("cifar-10-batches-py" if ten else "cifar-100-python")
    folder.mkdir(parents=True)
    key = "labels" if ten else "fine_labels"

    def dump(name: str, per_class: int) -> None:
        labels = [c for c in range(classes) for _ in range(per_class)]
        entry = {"data": _pixels(rng, len(labels), (3072,)), key: labels}
        (folder / name).write_bytes(pickle.dumps(entry))

    if ten:
        for i in range(1, 6):
            dump(f"data_batch_{i}", train_per_class)
        dump("test_batch", test_per_class)
        meta = {"label_names": [f"c{i}" for i in range(classes)]}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    else:
        dump("train", train_per_class)
        dump("test", test_per_class)
        meta = {"fine_label_names": [f"f{i}" for i in range(classes)]}
        (folder / "meta").write_bytes(pickle.dumps(meta))


def write_idx(folder: Path, prefix: str, count: int) -> None:
    """MNIST's idx3 images and idx1 labels."""
    rng = np.random.default_rng(1)
    labels = np.arange(count, dtype=np.uint8) % 10
    images = _pixels(rng, count, (28, 28))
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes()
    )
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, count) + labels.tobytes()
    )


def write_mnist(root: Path, name: str) -> None:
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    write_idx(raw, "train", 40)
    write_idx(raw, "t10k", 20)


def add_bad_files(folder: Path) -> list[Path]:
    """A zero-byte, a truncated, a garbled and a non-image file."""
    good = next(folder.glob("*.jpg")).read_bytes()
    bad = {
        "zero.jpg": b"",
        "truncated.jpg": good[: len(good) // 2],
        "garbled.png": b"\x89PNG\r\n\x1a\n" + os.urandom(64),
        "notes.txt": b"not an image\n",
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in bad]


@pytest.fixture
def no_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our CIFAR files are not the published ones: accept any file that exists (this test only)."""
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


# --- torchvision datasets -----------------------------------------------------------------------


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


# --- folders ------------------------------------------------------------------------------------


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


# --- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("train", [True, False])
def test_presets_give_normalized_images_of_the_right_side(preset: str, train: bool) -> None:
    image = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8)
    dataset = SimpleNamespace(mean=IMAGENET_MEAN, std=IMAGENET_STD, splits={})
    evaluation = eval_preprocessing(dataset, 224, preset)  # one pipeline for every preset's eval
    sample = image_transform(preset, 224)(image) if train else evaluation.resize(image)
    assert sample.dtype == (torch.float32 if preset == "alexnet2012" and train else torch.uint8)
    out = Normalize(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))(sample[None])[0]
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    low = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    high = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    slack = 0.2 if preset == "alexnet2012" and train else 1e-4  # lighting shifts a few sigma
    per_channel = out.flatten(1)
    assert (per_channel.min(1).values >= low - slack).all()
    assert (per_channel.max(1).values <= high + slack).all()


# AlexNet's PCA of ImageNet's RGB pixels in [0, 1] and its noise std (Krizhevsky et al. 2012,
# section 4.1; the eigenvalues and eigenvectors as published with fb.resnet.torch).
PUBLISHED_EIGVAL = (0.2175, 0.0188, 0.0045)
PUBLISHED_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
PUBLISHED_STD = 0.1


def test_lighting_noise_has_the_published_covariance() -> None:
    assert (IMAGENET_EIGVAL, IMAGENET_EIGVEC, LIGHTING_STD) == (
        PUBLISHED_EIGVAL,
        PUBLISHED_EIGVEC,
        PUBLISHED_STD,
    )
    draws = 20_000
    zeros = torch.zeros(draws, 3, 1, 1)
    offsets = Lighting()(zeros, generator=torch.Generator().manual_seed(0)).flatten(1).double()
    vectors = torch.tensor(PUBLISHED_EIGVEC, dtype=torch.float64)
    variances = (PUBLISHED_STD * torch.tensor(PUBLISHED_EIGVAL, dtype=torch.float64)) ** 2
    expected = vectors @ torch.diag(variances) @ vectors.T
    measured = torch.cov(offsets.T)
    assert offsets.mean(0).abs().max() < 4 * variances.max().sqrt() / draws**0.5
    assert torch.allclose(measured, expected, atol=0.05 * variances.max().item())
    # along each eigenvector the noise has that eigenvalue's variance, and no cross-correlation
    projected = vectors.T @ measured @ vectors
    assert torch.allclose(projected.diag(), variances, rtol=0.05, atol=1e-8)
    assert projected.triu(1).abs().max() < 0.05 * variances.max()


def test_batched_cifar_augment_is_a_padded_crop_or_its_mirror() -> None:
    images = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = augment_batch(images, "cifar", train=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flips = 0
    for image, result in zip(padded, out, strict=True):
        windows = [image[:, t : t + 32, s : s + 32] for t in range(9) for s in range(9)]
        plain = any(torch.equal(result, w) for w in windows)
        mirrored = any(torch.equal(result, w.flip(-1)) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 16 < flips < 48


# --- loaders ------------------------------------------------------------------------------------


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
