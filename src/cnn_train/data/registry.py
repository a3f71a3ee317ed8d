"""The dataset registry: name -> builder of a dataset with its splits.

Add a dataset from your own code with one decorated function (and a YAML file under your own
`configs/data/`):

    from cnn_train.data import InMemoryDataset, LabelledImages, register_dataset

    @register_dataset("mydata")
    def mydata(cfg: DictConfig) -> InMemoryDataset: ...

A builder returns an `InMemoryDataset` (uint8 image tensors per split) or a `FileDataset`
(image files per split); the loaders, augmentation and evaluation are the same as for the
built-in datasets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cnn_train.errors import UserError
from cnn_train.plugins import load_plugins

if TYPE_CHECKING:
    from omegaconf import DictConfig

Builder = TypeVar("Builder", bound=Callable[..., Any])
DATASETS: dict[str, Callable[[DictConfig], Any]] = {}
# The modules whose builders register the built-in datasets, imported at the first look-up.
BUILT_IN_MODULES = ("digits", "synthetic", "vision", "folder", "imagenet")


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Register `builder(cfg) -> dataset` under `name` (the `name:` of its data YAML)."""

    def register(builder: Builder) -> Builder:
        if name in DATASETS and DATASETS[name] is not builder:
            raise ValueError(f"a dataset named '{name}' is already registered")
        DATASETS[name] = builder
        return builder

    return register


def get_dataset_builder(name: str) -> Callable[[DictConfig], Any]:
    """The builder registered as `name`, or a UserError listing the valid names."""
    for module in BUILT_IN_MODULES:
        importlib.import_module(f"cnn_train.data.{module}")
    if name not in DATASETS:
        load_plugins()
    if name not in DATASETS:
        choices = ", ".join(sorted(DATASETS))
        raise UserError(f"unknown dataset '{name}' (data.name); choose one of: {choices}")
    return DATASETS[name]
