"""Loading a dataset by name, and the loader over one of its splits (in memory or streamed)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from cnn_train.data.folder import FileDataset
from cnn_train.data.memory import InMemoryDataset, InMemoryLoader, LabelledImages
from cnn_train.data.preprocessing import eval_preprocessing
from cnn_train.data.registry import get_dataset_builder
from cnn_train.data.stream import ImageSamples, StreamLoader
from cnn_train.data.transforms import BATCHED_PRESETS, check_preset, image_transform
from cnn_train.errors import UserError

Dataset = InMemoryDataset | FileDataset
Loader = InMemoryLoader | StreamLoader
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


def split_of(dataset: Dataset, split: str) -> object:
    """The split named `split`, or a UserError naming the dataset's other splits."""
    if split not in dataset.splits:
        raise UserError(
            f"this dataset has no '{split}' split; use data.split="
            + " or data.split=".join(name for name in dataset.splits if name != "train")
        )
    return dataset.splits[split]


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
    """A loader over one split: shuffled full batches for training, in order for evaluation.

    Evaluation batches, in memory or streamed, are the dataset's `eval_preprocessing`: the same
    tensors `cnn-predict` makes of the same files.
    """
    data, skipped = split_of(dataset, split), 0
    evaluation = eval_preprocessing(dataset, image_size, augment)
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
            evaluation=evaluation,
        )
    transform = image_transform(augment, image_size) if train else evaluation.resize
    return StreamLoader(
        ImageSamples(data, transform, seed),
        batch_size=batch_size,
        device=device,
        train=train,
        seed=seed,
        num_workers=num_workers,
        max_bad_fraction=max_bad_fraction,
        normalize=evaluation.normalizer(device),  # the model's one normalization, train and eval
        rank=rank,
        world_size=world_size,
    )
