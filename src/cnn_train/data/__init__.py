"""The built-in datasets (one builder per `configs/data/*.yaml`) and loaders over their splits."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from cnn_train.data.digits import load_digits_dataset
from cnn_train.data.folder import FileDataset, load_folder_dataset
from cnn_train.data.imagenet import load_imagenet_dataset
from cnn_train.data.memory import InMemoryDataset, InMemoryLoader, LabelledImages
from cnn_train.data.registry import DATASETS, Dataset, get_dataset_builder, register_dataset
from cnn_train.data.stream import ImageSamples, StreamLoader
from cnn_train.data.synthetic import load_synthetic_dataset
from cnn_train.data.transforms import BATCHED_PRESETS, Normalize, check_preset, image_transform
from cnn_train.data.vision import load_vision_dataset
from cnn_train.errors import UserError

__all__ = [
    "DATASETS",
    "Dataset",
    "FileDataset",
    "InMemoryDataset",
    "LabelledImages",
    "Loader",
    "load_dataset",
    "make_loader",
    "register_dataset",
]

Loader = InMemoryLoader | StreamLoader

register_dataset("digits")(load_digits_dataset)
register_dataset("synthetic")(load_synthetic_dataset)
for _name in ("cifar10", "cifar100", "mnist", "fashion_mnist"):
    register_dataset(_name)(load_vision_dataset)
register_dataset("folder")(load_folder_dataset)
register_dataset("cifar10_folder")(load_folder_dataset)
register_dataset("imagenet")(load_imagenet_dataset)
PRESET_SIZES = {"none": 224, "cifar": 32, "imagenet": 224, "alexnet2012": 224}


def load_dataset(cfg: DictConfig) -> Dataset:
    """Load the dataset that `cfg.name` names, with all its splits."""
    builder = get_dataset_builder(cfg.name)
    check_preset(cfg.augment)
    dataset = builder(cfg)
    if isinstance(dataset, FileDataset):
        dataset.native_size = PRESET_SIZES[cfg.augment]
        dataset.decode_budget_mb = cfg.decode_budget_mb
    return dataset


def in_memory(dataset: Dataset, augment: str, setting: str, image_size: int) -> bool:
    """Whether to batch from memory, from `data.in_memory` (auto/true/false), dataset and preset.

    Folder datasets are decoded once when their images at `image_size` fit the decode budget.
    """
    setting = str(setting).lower()
    if setting not in ("auto", "true", "false"):
        raise UserError(f"data.in_memory={setting} is not one of auto, true, false")
    batched = augment in BATCHED_PRESETS
    if setting == "true" and not batched:
        raise UserError(
            "data.in_memory=true needs data.augment=none or cifar (the presets applied to whole "
            "batches); use data.in_memory=auto"
        )
    if setting == "false" or not batched:
        return False
    if isinstance(dataset, FileDataset) and setting == "auto":
        return dataset.fits_in_memory(image_size)
    return True


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
    data, skipped = dataset.splits[split], 0
    if in_memory(dataset, augment, in_memory_setting, image_size):
        if isinstance(dataset, FileDataset):
            data, skipped = dataset.in_memory_split(
                split, image_size, max_bad_fraction=max_bad_fraction, world_size=world_size
            )
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
            skipped_files=skipped,
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
