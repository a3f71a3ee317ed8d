"""One evaluation pass."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from torch import nn

from cnn_train.engine.metrics import MetricSums
from cnn_train.engine.precision import Precision
from cnn_train.tracking import progress


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_batches: int,
    *,
    precision: Precision,
    topk: int,
    num_classes: int | None = None,
    desc: str = "val",
) -> MetricSums:
    """Sums of loss and top-1/top-k hits over `num_batches` batches (read them with `.read()`)."""
    model.eval()
    criterion = nn.CrossEntropyLoss()
    output_device = getattr(model, "output_device", next(model.parameters()).device)
    sums = MetricSums(output_device, topk, num_classes)
    limited = itertools.islice(batches, num_batches)
    for images, targets in progress(limited, total=num_batches, desc=desc):
        with precision.autocast():
            logits = model(images).float()
        targets = targets.to(logits.device, non_blocking=True)
        sums.update(logits, targets, criterion(logits, targets))
    return sums


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])
