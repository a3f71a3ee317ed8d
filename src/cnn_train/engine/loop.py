"""One training epoch and one evaluation pass."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from cnn_train.engine.metrics import MetricSums
from cnn_train.engine.precision import Precision
from cnn_train.optim import Schedule
from cnn_train.tracking import progress


@dataclass
class TrainState:
    """What moves through training: the global step and the step budget."""

    step: int = 0
    max_steps: int | None = None

    @property
    def done(self) -> bool:
        return self.max_steps is not None and self.step >= self.max_steps


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_batches: int,
    *,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    state: TrainState,
    topk: int,
    log_every: int,
    on_log: Callable[[int, dict[str, float]], None],
    desc: str,
) -> dict[str, float]:
    """Train over `num_batches` batches (or until the step budget ends); return epoch means."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    device = next(model.parameters()).device
    sums = MetricSums(device, topk)
    bar = progress(itertools.islice(batches, num_batches), total=num_batches, desc=desc)
    start = time.perf_counter()
    for images, targets in bar:
        if state.done:
            break
        with precision.autocast():
            logits = model(images)
            loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step_iteration()
        sums.update(logits, targets, loss)
        state.step += 1
        if state.step % log_every == 0:
            running = sums.read()
            bar.set_postfix(loss=f"{running['loss']:.4f}", acc1=f"{running['acc1']:.3f}")
            on_log(state.step, {"train/batch_loss": loss.item(), "lr": current_lr(optimizer)})
    bar.close()
    elapsed = time.perf_counter() - start
    result = sums.read()
    result["time_s"] = elapsed
    result["images_per_sec"] = result["samples"] / elapsed if elapsed > 0 else 0.0
    return result


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_batches: int,
    *,
    precision: Precision,
    topk: int,
    desc: str = "val",
) -> dict[str, float]:
    """Mean loss, top-1 and top-k accuracy over `num_batches` batches."""
    model.eval()
    criterion = nn.CrossEntropyLoss()
    device = next(model.parameters()).device
    sums = MetricSums(device, topk)
    limited = itertools.islice(batches, num_batches)
    for images, targets in progress(limited, total=num_batches, desc=desc):
        with precision.autocast():
            logits = model(images)
        sums.update(logits.float(), targets, criterion(logits.float(), targets))
    return sums.read()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])
