"""Random images around one fixed pattern per class: any size and class count, offline."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from cnn_train.data.memory import InMemoryDataset, LabelledImages
from cnn_train.data.registry import register_dataset
from cnn_train.errors import UserError

DATA_SEED = 1234
# The generated images (uint8) are held in memory, and each split is made through a float32 copy
# four times its size: a bound between keys, so it lives with the builder.
MAX_BYTES = 2 * 1024**3


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
    check_size(cfg)
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


def check_size(cfg: DictConfig) -> None:
    """Refuse, before allocating, a dataset whose images would not fit in `MAX_BYTES`."""
    images = cfg.num_classes + cfg.train_samples + cfg.val_samples
    size = images * cfg.channels * cfg.native_size**2
    if size > MAX_BYTES:
        raise UserError(
            f"data=synthetic: {images} images of {cfg.channels}x{cfg.native_size}x"
            f"{cfg.native_size} take {size / 1024**3:.1f} GiB, more than {MAX_BYTES // 1024**3}; "
            "lower data.train_samples, data.val_samples, data.num_classes or data.native_size"
        )
