"""The evaluation input a dataset's images get, as recorded in every checkpoint for inference."""

from __future__ import annotations

from typing import Any

import torch

CENTRE_CROP_PRESETS = ("imagenet", "alexnet2012")


def dataset_channels(dataset: Any) -> int:
    """The channels a dataset's images have: 1 for grey in-memory sets, else 3 (decoded as RGB)."""
    splits = getattr(dataset, "splits", {})
    images = getattr(splits.get("train"), "images", None)
    return int(images.shape[1]) if isinstance(images, torch.Tensor) else 3


def preprocessing_of(dataset: Any, image_size: int, augment: str = "none") -> dict[str, Any]:
    """What a checkpoint records about its evaluation input: side, resizing, normalisation.

    The ImageNet-style presets evaluate on a centre crop of an image whose short side was
    resized to 256/224 of the crop (256 for 224); the others resize the whole image.
    """
    short_side = round(image_size * 256 / 224) if augment in CENTRE_CROP_PRESETS else None
    return {
        "image_size": image_size,
        "resize_short_side": short_side,
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "channels": dataset_channels(dataset),
    }
