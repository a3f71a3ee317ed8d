"""Datasets (one builder per `configs/data/*.yaml`, in `registry.py`) and loaders over their splits.

Importing this package loads no dataset builder: they are imported when a name is first looked
up, so tools that only read checkpoints (`cnn-predict`, `cnn-export`) never load them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnn_train.data.memory import InMemoryDataset, LabelledImages
from cnn_train.data.registry import register_dataset

if TYPE_CHECKING:
    from cnn_train.data.folder import FileDataset
    from cnn_train.data.loaders import Dataset, Loader, load_dataset, make_loader

__all__ = [
    "Dataset",
    "FileDataset",
    "InMemoryDataset",
    "LabelledImages",
    "Loader",
    "load_dataset",
    "make_loader",
    "register_dataset",
]
LAZY = {
    "FileDataset": "cnn_train.data.folder",
    "Dataset": "cnn_train.data.loaders",
    "Loader": "cnn_train.data.loaders",
    "load_dataset": "cnn_train.data.loaders",
    "make_loader": "cnn_train.data.loaders",
}


def __getattr__(name: str) -> Any:
    """The loaders and the file dataset type, imported on first use."""
    if name not in LAZY:
        raise AttributeError(f"module 'cnn_train.data' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(LAZY[name]), name)
