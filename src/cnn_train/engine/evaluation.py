"""One evaluation pass over batches: the epoch's validation and `cnn-eval` both use it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import torch
from torch import nn

from cnn_train.engine.metrics import MetricSums
from cnn_train.engine.precision import Precision
from cnn_train.tracking import progress_bar


@torch.inference_mode()
def eval_pass(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_batches: int,
    *,
    precision: Precision,
    topk: int,
    num_classes: int | None = None,
    desc: str = "val",
    should_stop: Callable[[], bool] | None = None,
) -> MetricSums:
    """Sums of loss and top-1/top-k hits over `num_batches` batches (read them with `.read()`).

    `should_stop` is asked before each batch: a stop signal ends the pass early.
    """
    model.eval()
    criterion = nn.CrossEntropyLoss()
    output_device = getattr(model, "output_device", next(model.parameters()).device)
    sums = MetricSums(output_device, topk, num_classes)
    limited = itertools.islice(batches, num_batches)
    for images, targets in progress_bar(limited, total=num_batches, desc=desc):
        if should_stop is not None and should_stop():
            break
        with precision.autocast():
            logits = model(images).float()
        targets = targets.to(logits.device, non_blocking=True)
        sums.update(logits, targets, criterion(logits, targets))
    return sums
