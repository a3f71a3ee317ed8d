"""The `data` keys that bind each other, checked before anything is built."""

from __future__ import annotations

from typing import Any

from cnn_train.errors import UserError


def check_policy_preset(preset: str, policy: str, random_erase: float) -> None:
    """A policy or random erasing needs a preset that augments (`none` trains on plain images)."""
    if preset != "none":
        return
    if policy != "none":
        raise UserError(
            f"data.auto_augment={policy} needs an augmenting preset: set data.augment=cifar or "
            "imagenet"
        )
    if random_erase > 0:
        raise UserError(
            f"data.random_erase={random_erase} needs an augmenting preset: set data.augment=cifar "
            "or imagenet"
        )


def check_data_rules(data: Any) -> None:
    """Policies need an augmenting preset, RandomResizedCrop's scale rises, and evaluation
    resizes to at least the crop it takes (the model's input). Keys a checkpoint's data config
    lacks (written before they existed) pass."""
    check_policy_preset(
        data.get("augment", "none"), data.get("auto_augment", "none"), data.get("random_erase", 0)
    )
    scale = data.get("rrc_scale")
    if scale is not None and len(scale) == 2 and scale[0] > scale[1]:
        raise UserError(
            f"data.rrc_scale=[{scale[0]}, {scale[1]}] must rise: set it as [low, high], e.g. "
            "data.rrc_scale=[0.08,1.0]"
        )
    crop, size = data.get("val_crop_size"), data.get("image_size")
    if crop is not None and size is not None and crop != size:
        raise UserError(
            f"data.val_crop_size={crop} and data.image_size={size} differ; the evaluation crop is "
            "the model's input: set one of them"
        )
    resize, crop = data.get("val_resize_size"), crop or size
    if resize is not None and crop is not None and resize < crop:
        raise UserError(
            f"data.val_resize_size={resize} is below the evaluation crop ({crop} px); set "
            f"data.val_resize_size={crop} or larger"
        )
