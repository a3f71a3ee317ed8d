"""Short CPU training configs, and small datasets written in the published formats: CIFAR-10
and CIFAR-100 python pickles, MNIST's idx files, and bad files among good images."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np

from tests.helpers import compose_config

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
