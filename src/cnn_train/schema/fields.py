"""Bounds and limits shared by the schema's dataclasses: `bounded` declares a field's range."""

from __future__ import annotations

from dataclasses import field
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MONITORS = ("val/acc1", "val/acc5", "val/loss", "val_ema/acc1", "val_ema/loss")
WEIGHTS = ("auto", "model", "ema")
TTA = ("none", "flip", "ten_crop")
EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; a larger head is a typo, not a dataset
MAX_IMAGE_SIZE = 4096
MAX_EPOCHS = 1_000_000


def bounded(default: Any, **bounds: Any) -> Any:
    """A field with its default and its bounds, which `config_checks.check_fields` applies.

    Bounds: `gt`, `ge`, `lt`, `le` (numbers; for a list, each of its items), `choices`, a
    list's `length`, and `off`: the value that turns a feature off, accepted besides the range.
    A subclass that only changes the default keeps its base's bounds. (It is a `field()`: ruff's
    RUF009 cannot tell, hence its `noqa` on list fields.)
    """
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=bounds)
    return field(default=default, metadata=bounds)
