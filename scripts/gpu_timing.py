"""What scripts/gpu_check.py times with: sizes, table rows and cnn-train's own training step."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from cnn_train.engine.precision import Precision
from cnn_train.engine.stepper import Stepper, StepSettings
from cnn_train.optim import Schedule

MODELS = ("alexnet", "vgg16", "resnet34")
MODES: dict[str, tuple[str, bool, bool]] = {
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "bf16+channels_last": ("bf16", True, False),
    "bf16+channels_last+compile": ("bf16", True, True),
}
# A plain step: no accumulation, clipping, smoothing, mixing or EMA.
PLAIN_STEP = StepSettings(
    label_smoothing=0.0,
    accumulate_steps=1,
    grad_clip_norm=None,
    ema_decay=None,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
)
SPLIT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Sizes:
    """How big each check is: full on a GPU, tiny for a dry run on CPU."""

    image: dict[str, int]
    variant: dict[str, str]
    batch: int
    split_batch: int
    warmup: int
    steps: int
    classes: int
    compile_backend: str


GPU = Sizes(
    image={"alexnet": 224, "vgg16": 224, "resnet34": 224, "alexnet2012": 224},
    variant=dict.fromkeys((*MODELS, "alexnet2012"), "imagenet"),
    batch=128,
    split_batch=32,
    warmup=5,
    steps=20,
    classes=1000,
    compile_backend="inductor",
)
DRY = Sizes(
    image={"alexnet": 64, "vgg16": 32, "resnet34": 16, "alexnet2012": 64},
    variant={
        "alexnet": "imagenet",
        "vgg16": "small",
        "resnet34": "small",
        "alexnet2012": "imagenet",
    },
    batch=2,
    split_batch=2,
    warmup=1,
    steps=1,
    classes=10,
    compile_backend="eager",
)


@dataclass
class Row:
    """One line of the result table."""

    check: str
    model: str
    setting: str
    images_per_sec: float | None = None
    result: str = "ok"
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.result.startswith("FAIL")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_step_fn(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: str,
    device_type: str,
    *,
    raw_model: nn.Module | None = None,
    channels_last: bool = False,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """cnn-train's own training step (its Stepper) on a batch, in `precision`; returns the loss."""
    stepper = Stepper(
        model,
        raw_model or model,
        PLAIN_STEP,
        precision=Precision(precision, device_type),
        optimizer=optimizer,
        schedule=Schedule(None, per_iteration=True),
        num_classes=0,
        channels_last=channels_last,
    )

    def step(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return stepper.train_batch(images, targets)[1]

    return step


def time_steps(
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
    sizes: Sizes,
    sync: Callable[[], None],
) -> tuple[float, float]:
    """(images/s over the timed window, seconds of the first step) after the warmup."""
    start = time.perf_counter()
    step(images, targets)
    sync()
    first = time.perf_counter() - start
    for _ in range(sizes.warmup - 1):
        step(images, targets)
    sync()
    start = time.perf_counter()
    for _ in range(sizes.steps):
        loss = step(images, targets)
    sync()
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss).item():
        raise FloatingPointError(f"loss is {loss.item()}")
    return sizes.steps * images.shape[0] / elapsed, first
