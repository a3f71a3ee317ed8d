"""The model registry: each architecture, its variants, and the input sizes it accepts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from cnn_train.errors import UserError
from cnn_train.models.alexnet import alexnet
from cnn_train.models.alexnet2012 import alexnet2012
from cnn_train.models.resnet import resnet34
from cnn_train.models.vgg import vgg16

SMALL_INPUT_MAX_SIZE = 32
SIZE_ROUNDING = 8


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture and the smallest input side each variant accepts."""

    build: Callable[..., nn.Module]
    min_size: Mapping[str, int]


MODELS: dict[str, ModelSpec] = {
    "alexnet": ModelSpec(alexnet, {"imagenet": 63}),
    "alexnet2012": ModelSpec(alexnet2012, {"imagenet": 63}),
    "vgg16": ModelSpec(vgg16, {"imagenet": 32, "small": 32}),
    "resnet34": ModelSpec(resnet34, {"imagenet": 1, "small": 1}),
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or a UserError listing the valid names."""
    if name not in MODELS:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def resolve_variant(name: str, variant: str, image_size: int) -> str:
    """Pick the variant: `auto` means small-input for images of 32 px and below, if one exists."""
    spec = get_spec(name)
    if variant == "auto":
        small = "small" in spec.min_size and image_size <= SMALL_INPUT_MAX_SIZE
        return "small" if small else "imagenet"
    if variant not in spec.min_size:
        raise UserError(
            f"model {name} has no '{variant}' variant; use model.variant="
            + " or model.variant=".join(["auto", *spec.min_size])
        )
    return variant


def working_image_size(name: str, variant: str, native_size: int, requested: int | None) -> int:
    """The side images are fed at: the request, else native if the model takes it, else its minimum.

    A minimum that is not a multiple of 8 is rounded up to one (AlexNet's 63 px becomes 64).
    """
    smallest = get_spec(name).min_size[variant]
    if requested is not None:
        if requested < smallest:
            raise UserError(
                f"{name} ({variant} variant) needs images of at least {smallest} px, "
                f"got data.image_size={requested}; use data.image_size={smallest} or larger"
            )
        return requested
    if native_size >= smallest:
        return native_size
    return -(-smallest // SIZE_ROUNDING) * SIZE_ROUNDING


def build_model(name: str, num_classes: int, variant: str, dropout: float = 0.5) -> nn.Module:
    """Build a registered model."""
    return get_spec(name).build(num_classes=num_classes, variant=variant, dropout=dropout)
