"""Loading a dataset by name, and the loader over one of its splits (in memory or streamed)."""

from __future__ import annotations

from functools import partial

import torch
from omegaconf import DictConfig

from cnn_train.data.folder import FileDataset, ImageFiles
from cnn_train.data.memory import InMemoryDataset, InMemoryLoader, LabelledImages
from cnn_train.data.policies import Augmentation, EraseBox, build_policy
from cnn_train.data.preprocessing import EvalPreprocessing, eval_preprocessing
from cnn_train.data.registry import get_dataset_builder
from cnn_train.data.rules import check_policy_preset
from cnn_train.data.stream import ImageSamples, StreamLoader
from cnn_train.data.transforms import (
    BATCHED_PRESETS,
    check_preset,
    image_transform,
)
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


def in_memory(
    dataset: Dataset,
    augment: str,
    setting: str,
    image_size: int,
    augmentation: Augmentation | None = None,
) -> bool:
    """Whether to batch from memory, from `data.in_memory` (auto/true/false), dataset and preset.

    Folder datasets are decoded once when their images at `image_size` fit the decode budget,
    and only at the preset's plain sizes: a folder decoded once holds one size, so a training
    crop, evaluation resize or interpolation of their own sends it to the worker path. Tensor
    datasets (digits, MNIST, CIFAR) honour those settings in memory (`memory.resize_uint8`).
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
    if isinstance(dataset, FileDataset):
        if augmentation is not None and augmentation.custom_sizes:
            if setting == "true":
                raise UserError(
                    "data.in_memory=true decodes a folder once at one size, so it cannot take "
                    "data.train_crop_size, data.val_resize_size or bicubic; use data.in_memory=auto"
                )
            return False
        if setting == "auto":
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
    augmentation: Augmentation | None = None,
) -> Loader:
    """A loader over one split: shuffled full batches (or, `sampler=balanced`, drawn each class
    equally likely; `augmentation.repeats` copies of each) for training, at the training crop;
    in order, as `data_eval_preprocessing` says, for evaluation at `image_size` (the model's)."""
    augmentation = augmentation or Augmentation()
    check_policy_preset(augment, augmentation.policies.name, augmentation.policies.random_erase)
    data, skipped = split_of(dataset, split), 0
    common = {"rank": rank, "world_size": world_size, "balanced": train and sampler == "balanced"}
    common.update(repeats=augmentation.repeats if train else 1, seed=seed, device=device)
    common["batch_size"] = batch_size
    evaluation = loader_evaluation(dataset, image_size, augment, augmentation)
    side = (augmentation.train_crop_size or image_size) if train else image_size
    if in_memory(dataset, augment, in_memory_setting, image_size, augmentation):
        if isinstance(dataset, FileDataset):
            data, skipped = dataset.in_memory_split(
                split, image_size, max_bad_fraction=max_bad_fraction, world_size=world_size
            )
        assert isinstance(data, LabelledImages)
        return InMemoryLoader(
            data,
            image_size=side,
            mean=dataset.mean,
            std=dataset.std,
            shuffle=train,
            drop_last=train,
            augment=augment,
            skipped_files=skipped,
            evaluation=evaluation,
            interpolation=augmentation.interpolation,
            policies=augmentation.policies,
            **common,
        )
    return StreamLoader(
        stream_samples(data, augment, side, augmentation, evaluation, train=train),
        train=train,
        num_workers=num_workers,
        max_bad_fraction=max_bad_fraction,
        normalize=evaluation.normalizer(device),  # the model's one normalization, train and eval
        **common,
    )


def loader_evaluation(
    dataset: Dataset, image_size: int, augment: str, augmentation: Augmentation
) -> EvalPreprocessing:
    """The evaluation preprocessing of the loaders (the checkpoint records the same one)."""
    resize = augmentation.val_resize_size
    if resize is not None and resize < image_size:
        raise UserError(
            f"data.val_resize_size={resize} is below the evaluation crop ({image_size} px); set "
            f"data.val_resize_size={image_size} or larger"
        )
    return eval_preprocessing(
        dataset,
        image_size,
        augment,
        resize_size=augmentation.val_resize_size,
        interpolation=augmentation.interpolation,
    )


def stream_samples(
    data: ImageFiles | LabelledImages,
    augment: str,
    side: int,
    augmentation: Augmentation,
    evaluation: EvalPreprocessing,
    *,
    train: bool,
) -> ImageSamples:
    """The worker path's samples: the preset with its policy and erase box for training, the
    evaluation resize otherwise."""
    if not train:
        return ImageSamples(data, evaluation.resize)
    policies = augmentation.policies
    transform = image_transform(
        augment,
        side,
        interpolation=augmentation.interpolation,
        rrc_scale=augmentation.rrc_scale,
        policy=build_policy(policies),
    )
    erase_box = EraseBox(policies.random_erase) if policies.random_erase > 0 else None
    return ImageSamples(data, transform, erase_box)


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
    samples = ImageSamples(split_of(dataset, split), partial(evaluation.views, tta=tta))
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
