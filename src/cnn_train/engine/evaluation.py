"""One evaluation pass over batches: the epoch's validation and `cnn-eval` both use it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
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


@torch.inference_mode()
def views_pass(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_batches: int,
    *,
    precision: Precision,
    topk: int,
    num_classes: int,
) -> MetricSums:
    """`eval_pass` over batches of test-time views [B, V, C, S, S]: each image's prediction is
    its views' softmax averaged (scored by the log of that mean)."""
    model.eval()
    output_device = getattr(model, "output_device", next(model.parameters()).device)
    sums = MetricSums(output_device, topk, num_classes)
    limited = itertools.islice(batches, num_batches)
    for views, targets in progress_bar(limited, total=num_batches, desc="eval (views)"):
        batch, count = views.shape[:2]
        flat = views.flatten(0, 1).expand(-1, 3, -1, -1)
        with precision.autocast():
            logits = model(flat).float()
        mean_probabilities = logits.softmax(dim=1).view(batch, count, -1).mean(dim=1)
        log_probabilities = mean_probabilities.clamp_min(1e-12).log()
        targets = targets.to(log_probabilities.device, non_blocking=True)
        sums.update(log_probabilities, targets, F.nll_loss(log_probabilities, targets))
    return sums
