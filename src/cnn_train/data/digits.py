"""scikit-learn's bundled 8x8 handwritten digits: the offline default dataset."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from cnn_train.data.memory import InMemoryDataset, LabelledImages

SPLIT_SEED = 0


def load_digits_dataset(cfg: DictConfig) -> InMemoryDataset:
    """1,797 digits as uint8 1x8x8 images with a fixed stratified train/val split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    train_x, val_x, train_y, val_y = train_test_split(
        images, labels, test_size=cfg.val_fraction, stratify=labels, random_state=SPLIT_SEED
    )
    train_float = train_x.astype(np.float64) / 255.0
    mean, std = float(train_float.mean()), float(train_float.std())
    return InMemoryDataset(
        splits={
            "train": LabelledImages(torch.from_numpy(train_x), torch.from_numpy(train_y)),
            "val": LabelledImages(torch.from_numpy(val_x), torch.from_numpy(val_y)),
        },
        class_names=[str(name) for name in bunch.target_names],
        native_size=8,
        mean=(mean,) * 3,
        std=(std,) * 3,
    )
