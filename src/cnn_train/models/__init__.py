"""The built-in models, the registry that holds them, and the input sizes each accepts."""

from __future__ import annotations

from cnn_train.errors import UserError
from cnn_train.models.alexnet import alexnet
from cnn_train.models.alexnet2012 import alexnet2012
from cnn_train.models.registry import MODELS, ModelSpec, build_model, get_spec, register_model
from cnn_train.models.resnet import resnet34
from cnn_train.models.vgg import vgg16

__all__ = [
    "MODELS",
    "ModelSpec",
    "build_model",
    "get_spec",
    "register_model",
    "resolve_variant",
    "working_image_size",
]

SMALL_INPUT_MAX_SIZE = 32
SIZE_ROUNDING = 8

register_model("alexnet", min_size={"imagenet": 63})(alexnet)
register_model("alexnet2012", min_size={"imagenet": 63})(alexnet2012)
register_model("vgg16", min_size={"imagenet": 32, "small": 32})(vgg16)
register_model("resnet34", min_size={"imagenet": 1, "small": 1})(resnet34)


def resolve_variant(name: str, variant: str, image_size: int) -> str:
    """Pick the variant: `auto` means small-input for images of 32 px and below, if one exists."""
    spec = get_spec(name)
    if variant == "auto":
        small = "small" in spec.min_size and image_size <= SMALL_INPUT_MAX_SIZE
        return "small" if small else next(iter(spec.min_size))
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
