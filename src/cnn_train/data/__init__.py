"""The dataset registry: one builder per `configs/data/*.yaml`, and loaders over their splits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from cnn_train.data.digits import load_digits_dataset
from cnn_train.data.folder import FileDataset, load_folder_dataset
from cnn_train.data.imagenet import load_imagenet_dataset
from cnn_train.data.memory import InMemoryDataset, InMemoryLoader, LabelledImages
from cnn_train.data.stream import ImageSamples, StreamLoader
from cnn_train.data.synthetic import load_synthetic_dataset
from cnn_train.data.transforms import BATCHED_PRESETS, Normalize, check_preset, image_transform
from cnn_train.data.vision import load_vision_dataset
from cnn_train.errors import UserError

Dataset = InMemoryDataset | FileDataset
Loader = InMemoryLoader | StreamLoader

DATASETS: dict[str, Callable[[DictConfig], Dataset]] = {
    "digits": load_digits_dataset,
    "synthetic": load_synthetic_dataset,
    "cifar10": load_vision_dataset,
    "cifar100": load_vision_dataset,
    "mnist": load_vision_dataset,
    "fashion_mnist": load_vision_dataset,
    "folder": load_folder_dataset,
    "cifar10_folder": load_folder_dataset,
    "imagenet": load_imagenet_dataset,
}
PRESET_SIZES = {"none": 224, "cifar": 32, "imagenet": 224, "alexnet2012": 224}


def load_dataset(cfg: DictConfig) -> Dataset:
    """Load the dataset that `cfg.name` names, with all its splits."""
    if cfg.name not in DATASETS:
        raise UserError(f"unknown dataset '{cfg.name}'; choose one of: {', '.join(DATASETS)}")
    check_preset(cfg.augment)
    dataset = DATASETS[cfg.name](cfg)
    if isinstance(dataset, FileDataset):
        dataset.native_size = PRESET_SIZES[cfg.augment]
    return dataset


def in_memory(dataset: Dataset, augment: str, setting: str) -> bool:
    """Whether to batch from memory, from `data.in_memory` (auto/true/false), dataset and preset."""
    setting = str(setting).lower()
    if setting not in ("auto", "true", "false"):
        raise UserError(f"data.in_memory={setting} is not one of auto, true, false")
    possible = isinstance(dataset, InMemoryDataset) and augment in BATCHED_PRESETS
    if setting == "true" and not possible:
        raise UserError(
            "data.in_memory=true needs a dataset held in memory (digits, synthetic, cifar10, "
            "cifar100, mnist, fashion_mnist) and data.augment=none or cifar; "
            "use data.in_memory=auto"
        )
    return possible and setting != "false"


def make_loader(
    dataset: Dataset,
    split: str,
    *,
    image_size: int,
    batch_size: int,
    device: torch.device,
    train: bool,
    seed: int = 0,
    augment: str = "none",
    in_memory_setting: str = "auto",
    num_workers: int = 0,
    max_bad_fraction: float = 0.01,
    rank: int = 0,
    world_size: int = 1,
) -> Loader:
    """A loader over one split: shuffled full batches for training, in order for evaluation."""
    if split not in dataset.splits:
        raise UserError(
            f"this dataset has no '{split}' split; use data.split="
            + " or data.split=".join(name for name in dataset.splits if name != "train")
        )
    data = dataset.splits[split]
    if in_memory(dataset, augment, in_memory_setting):
        assert isinstance(data, LabelledImages)
        return InMemoryLoader(
            data,
            image_size=image_size,
            batch_size=batch_size,
            mean=dataset.mean,
            std=dataset.std,
            device=device,
            shuffle=train,
            drop_last=train,
            seed=seed,
            augment=augment,
            rank=rank,
            world_size=world_size,
        )
    return StreamLoader(
        ImageSamples(data, image_transform(augment, image_size, train=train), seed),
        batch_size=batch_size,
        device=device,
        train=train,
        seed=seed,
        num_workers=num_workers,
        max_bad_fraction=max_bad_fraction,
        normalize=Normalize(dataset.mean, dataset.std, device),
        rank=rank,
        world_size=world_size,
    )
