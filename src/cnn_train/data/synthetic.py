"""Random images around one fixed pattern per class: any size and class count, offline."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from cnn_train.data.memory import InMemoryDataset, LabelledImages
from cnn_train.data.registry import register_dataset

DATA_SEED = 1234


def _sample(
    prototypes: torch.Tensor, count: int, noise: float, generator: torch.Generator
) -> LabelledImages:
    labels = torch.arange(count) % len(prototypes)
    labels = labels[torch.randperm(count, generator=generator)]
    jitter = torch.randn((count, *prototypes.shape[1:]), generator=generator) * (noise * 255.0)
    images = (prototypes[labels].float() + jitter).round_().clamp_(0, 255).to(torch.uint8)
    return LabelledImages(images, labels)


@register_dataset("synthetic")
def load_synthetic_dataset(cfg: DictConfig) -> InMemoryDataset:
    """A learnable dataset of `train_samples` + `val_samples` images, the same on every call."""
    generator = torch.Generator().manual_seed(DATA_SEED)
    shape = (cfg.num_classes, cfg.channels, cfg.native_size, cfg.native_size)
    prototypes = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return InMemoryDataset(
        splits={
            "train": _sample(prototypes, cfg.train_samples, cfg.noise, generator),
            "val": _sample(prototypes, cfg.val_samples, cfg.noise, generator),
        },
        class_names=[f"class_{index}" for index in range(cfg.num_classes)],
        native_size=cfg.native_size,
        mean=(0.5,) * 3,
        std=(0.3,) * 3,
    )
