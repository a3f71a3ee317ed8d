"""The built-in models (each registered with its spec in its own module) and the registry."""

from __future__ import annotations

from cnn_train.models import alexnet, alexnet2012, resnet, vgg  # noqa: F401  (they register)
from cnn_train.models.registry import (
    MODELS,
    ModelSpec,
    build_from_config,
    build_model,
    get_spec,
    register_model,
    resolve_variant,
    working_image_size,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "build_from_config",
    "build_model",
    "get_spec",
    "register_model",
    "resolve_variant",
    "working_image_size",
]
