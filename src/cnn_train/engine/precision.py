"""Mixed precision: the autocast dtype of a run, a GradScaler for fp16, and the memory format."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cnn_train.models.registry import ModelSpec

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
PRECISIONS = ("auto", *DTYPES)  # auto: resolve_precision picks for the device
# x86 features with native bf16 arithmetic (oneDNN's fast bf16 kernels); without them bf16 on the
# CPU is emulated and slower than fp32.
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX-512 BF16 or AMX), as torch detects it."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        capabilities = get_capabilities()
        return any(capabilities.get(feature, False) for feature in NATIVE_BF16_FEATURES)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch without the mapping
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """`auto` is bf16 on GPUs that support it and on CPUs with native bf16, fp32 elsewhere."""
    if name == "auto":
        if device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
        else:
            bf16 = device.type == "cpu" and cpu_has_native_bf16()
        name = "bf16" if bf16 else "fp32"
    return Precision(name, device.type)


def use_channels_last(
    setting: bool | None, device: torch.device, spec: ModelSpec, image_size: int
) -> bool:
    """`trainer.channels_last`; null means on GPUs, and on the CPU where the model's spec says
    it was measured faster (`ModelSpec.channels_last_on_cpu`).
    """
    if setting is not None:
        return setting
    if device.type == "cuda":
        return True
    return spec.channels_last_on_cpu(image_size)
