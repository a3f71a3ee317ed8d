"""scikit-learn's bundled 8x8 handwritten digits: the offline default dataset."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from cnn_train.data.memory import InMemoryDataset, LabelledImages
from cnn_train.data.order import holdout_split
from cnn_train.data.registry import register_dataset


@register_dataset("digits")
def load_digits_dataset(cfg: DictConfig) -> InMemoryDataset:
    """1,797 digits as uint8 1x8x8 images with a fixed stratified train/val split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None])
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train, val = holdout_split(labels, cfg.val_fraction, "change data.val_fraction")
    train_float = images[train].numpy().astype(np.float64) / 255.0
    mean, std = float(train_float.mean()), float(train_float.std())
    return InMemoryDataset(
        splits={
            "train": LabelledImages(images[train], labels[train]),
            "val": LabelledImages(images[val], labels[val]),
        },
        class_names=[str(name) for name in bunch.target_names],
        native_size=8,
        mean=(mean,) * 3,
        std=(std,) * 3,
    )
