"""CIFAR-10/100, MNIST and Fashion-MNIST through torchvision's loaders, held in memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from omegaconf import DictConfig
from torchvision import datasets

from cnn_train.data.memory import InMemoryDataset, LabelledImages
from cnn_train.data.order import holdout_split
from cnn_train.data.registry import register_dataset
from cnn_train.errors import UserError


@dataclass(frozen=True)
class VisionSpec:
    """A torchvision dataset class, where its files live under root, and its pixel statistics."""

    loader: type
    files: str
    url: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


SPECS = {
    "cifar10": VisionSpec(
        datasets.CIFAR10,
        "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": VisionSpec(
        datasets.CIFAR100,
        "cifar-100-python/{train, test, meta}",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
    "mnist": VisionSpec(
        datasets.MNIST,
        "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (0.1307,) * 3,
        (0.3081,) * 3,
    ),
    "fashion_mnist": VisionSpec(
        datasets.FashionMNIST,
        "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (0.2860,) * 3,
        (0.3530,) * 3,
    ),
}


def _open(spec: VisionSpec, name: str, root: str, train: bool, download: bool):
    try:
        return spec.loader(root, train=train, download=download)
    except (RuntimeError, URLError, OSError) as error:
        how = (
            f"download failed ({error}); check the network or fetch {spec.url} by hand"
            if download
            else f"pass data.download=true or fetch {spec.url}"
        )
        raise UserError(
            f"{name} files not found under data.root={root} (expected {root}/{spec.files}); {how}"
        ) from error


def _as_split(dataset) -> LabelledImages:
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return LabelledImages(images.contiguous(), torch.as_tensor(np.asarray(dataset.targets)).long())


@register_dataset("cifar10")
@register_dataset("cifar100")
@register_dataset("mnist")
@register_dataset("fashion_mnist")
def load_vision_dataset(cfg: DictConfig) -> InMemoryDataset:
    """Train (minus a fixed stratified val split), val and the official test split, as uint8."""
    spec = SPECS[cfg.name]
    root = str(Path(cfg.root or "data").expanduser())
    full = _open(spec, cfg.name, root, True, cfg.download)
    test = _open(spec, cfg.name, root, False, cfg.download)
    train = _as_split(full)
    keep, hold = (
        indices.sort().values
        for indices in holdout_split(train.labels, cfg.val_fraction, "change data.val_fraction")
    )
    return InMemoryDataset(
        splits={
            "train": LabelledImages(train.images[keep], train.labels[keep]),
            "val": LabelledImages(train.images[hold], train.labels[hold]),
            "test": _as_split(test),
        },
        class_names=[str(name) for name in full.classes],
        native_size=train.images.shape[-1],
        mean=spec.mean,
        std=spec.std,
    )
