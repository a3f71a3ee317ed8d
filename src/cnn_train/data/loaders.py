"""Loading a dataset by name, and the loader over one of its splits (in memory or streamed)."""

from __future__ import annotations

from functools import partial

import torch
from omegaconf import DictConfig

from cnn_train.data.folder import FileDataset, ImageFiles
from cnn_train.data.memory import InMemoryDataset, InMemoryLoader, LabelledImages
from cnn_train.data.preprocessing import EvalPreprocessing, eval_preprocessing
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


def split_of(dataset: Dataset, split: str) -> ImageFiles | LabelledImages:
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
    sampler: str = "shuffle",
) -> Loader:
    """A loader over one split: shuffled full batches (or, `sampler=balanced`, drawn each class
    equally likely) for training; in order, as `eval_preprocessing` says, for evaluation."""
    data, skipped = split_of(dataset, split), 0
    shard = {"rank": rank, "world_size": world_size, "balanced": train and sampler == "balanced"}
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
            skipped_files=skipped,
            evaluation=evaluation,
            **shard,
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
        **shard,
    )


def views_loader(
    dataset: Dataset,
    split: str,
    evaluation: EvalPreprocessing,
    tta: str,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    max_bad_fraction: float = 0.01,
) -> StreamLoader:
    """A loader over one split whose batches hold each image's test-time views: normalized float
    [B, V, C, S, S] (`EvalPreprocessing.views`), streamed whatever the dataset."""
    samples = ImageSamples(split_of(dataset, split), partial(evaluation.views, tta=tta), seed=0)
    return StreamLoader(
        samples,
        batch_size=batch_size,
        device=device,
        train=False,
        seed=0,
        num_workers=num_workers,
        max_bad_fraction=max_bad_fraction,
        normalize=evaluation.normalizer(device),
    )
