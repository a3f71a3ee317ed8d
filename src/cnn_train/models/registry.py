"""The model registry: name -> builder, and the smallest input side each variant accepts.

Add a model from your own code with one decorated function (and a YAML file under your own
`configs/model/`):

    from cnn_train.models import register_model

    @register_model("mynet", min_size={"imagenet": 32})
    def mynet(num_classes: int, variant: str) -> nn.Module: ...

The builder is called with `num_classes`, `variant` and the model config's other keys (those
its schema adds to ModelConfig, e.g. `dropout`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from cnn_train.errors import UserError
from cnn_train.plugins import load_plugins

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture and the smallest input side each variant accepts."""

    build: Callable[..., nn.Module]
    min_size: Mapping[str, int]


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, min_size: Mapping[str, int]) -> Callable[[Builder], Builder]:
    """Register `builder` under `name`; `min_size` maps each variant it has to its smallest side."""

    def register(builder: Builder) -> Builder:
        if name in MODELS and MODELS[name].build is not builder:
            raise ValueError(f"a model named '{name}' is already registered")
        MODELS[name] = ModelSpec(builder, dict(min_size))
        return builder

    return register


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or a UserError listing the valid names."""
    if name not in MODELS:
        load_plugins()
    if name not in MODELS:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, num_classes: int, variant: str, **options: Any) -> nn.Module:
    """Build a registered model; `options` are its own settings (e.g. `dropout`)."""
    return get_spec(name).build(num_classes=num_classes, variant=variant, **options)
