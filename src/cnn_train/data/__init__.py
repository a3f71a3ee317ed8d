"""The dataset registry: one builder per `configs/data/*.yaml`, and loaders over their splits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from cnn_train.data.digits import load_digits_dataset
from cnn_train.data.memory import InMemoryDataset, InMemoryLoader
from cnn_train.data.synthetic import load_synthetic_dataset
from cnn_train.errors import UserError

DATASETS: dict[str, Callable[[DictConfig], InMemoryDataset]] = {
    "digits": load_digits_dataset,
    "synthetic": load_synthetic_dataset,
}


def load_dataset(cfg: DictConfig) -> InMemoryDataset:
    """Load the dataset that `cfg.name` names, with all its splits."""
    if cfg.name not in DATASETS:
        raise UserError(f"unknown dataset '{cfg.name}'; choose one of: {', '.join(DATASETS)}")
    return DATASETS[cfg.name](cfg)


def make_loader(
    dataset: InMemoryDataset,
    split: str,
    *,
    image_size: int,
    batch_size: int,
    device: torch.device,
    train: bool,
    seed: int = 0,
) -> InMemoryLoader:
    """A loader over one split: shuffled with full batches for training, in order for evaluation."""
    if split not in dataset.splits:
        raise UserError(
            f"this dataset has no '{split}' split; use data.split="
            + " or data.split=".join(name for name in dataset.splits if name != "train")
        )
    return InMemoryLoader(
        dataset.splits[split],
        image_size=image_size,
        batch_size=batch_size,
        mean=dataset.mean,
        std=dataset.std,
        device=device,
        shuffle=train,
        drop_last=train,
        seed=seed,
    )
