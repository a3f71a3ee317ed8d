"""Mixed precision: which autocast dtype a run uses, and a GradScaler for fp16."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass(frozen=True)
class Precision:
    """The resolved precision of a run on one device."""

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.name]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the chosen dtype, or nothing for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is active for fp16 only."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """`auto` is bf16 on a GPU that supports it, fp32 everywhere else."""
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        name = "bf16" if bf16 else "fp32"
    return Precision(name, device.type)


CHANNELS_LAST_ON_CPU = frozenset({"resnet34", "vgg16"})
CHANNELS_LAST_MIN_SIZE_ON_CPU = 32


def use_channels_last(
    setting: bool | None, device: torch.device, model_name: str, image_size: int
) -> bool:
    """`trainer.channels_last`; null means on GPUs, and on the CPU where it was measured faster.

    On a 2-core x86 CPU (training step, batch 64) NHWC gave ResNet-34 +3% at 64 px and VGG16 +5%
    at 32 px, nothing for AlexNet, and cost 10% on 8 px inputs, where the reorders dominate.
    """
    if setting is not None:
        return setting
    if device.type == "cuda":
        return True
    return model_name in CHANNELS_LAST_ON_CPU and image_size >= CHANNELS_LAST_MIN_SIZE_ON_CPU
