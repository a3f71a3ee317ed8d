"""One training step and one evaluation pass."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from torch import nn

from cnn_train.engine.metrics import MetricSums
from cnn_train.engine.precision import Precision
from cnn_train.tracking import progress


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and optimizer step on one batch; return the logits and the loss."""
    with precision.autocast():
        logits = model(images)
        loss = criterion(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits, loss


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_batches: int,
    *,
    precision: Precision,
    topk: int,
    desc: str = "val",
) -> MetricSums:
    """Sums of loss and top-1/top-k hits over `num_batches` batches (read them with `.read()`)."""
    model.eval()
    criterion = nn.CrossEntropyLoss()
    sums = MetricSums(next(model.parameters()).device, topk)
    limited = itertools.islice(batches, num_batches)
    for images, targets in progress(limited, total=num_batches, desc=desc):
        with precision.autocast():
            logits = model(images)
        sums.update(logits.float(), targets, criterion(logits.float(), targets))
    return sums


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])
