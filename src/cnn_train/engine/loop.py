"""The hot path: one training epoch and one evaluation pass."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from cnn_train.engine.guards import StepGuard
from cnn_train.engine.metrics import MetricSums
from cnn_train.engine.precision import Precision
from cnn_train.engine.setup import TrainingRun
from cnn_train.engine.snapshot import checked_save, halt
from cnn_train.tracking import progress


@dataclass
class EpochTraining:
    """What one epoch's training did: where it stopped, how many batches, how long."""

    batch_in_epoch: int  # the next batch to train (== steps_per_epoch at the epoch's end)
    trained: int  # batches trained in this call (fewer than batch_in_epoch after a resume)
    seconds: float
    start_lr: float  # the LR of the epoch's first step


def train_one_epoch(run: TrainingRun, epoch: int, guard: StepGuard) -> EpochTraining:
    """Train the epoch's batches (from a resume point); end the run on a stop signal (after
    saving) or a non-finite loss (without saving)."""
    cfg = run.cfg
    skip = run.resume_batch if epoch == run.start_epoch else 0
    if skip == 0:
        run.epoch_sums = run.new_sums()
    run.train_loader.set_epoch(epoch)
    run.train_model.train()
    start_lr = current_lr(run.optimizer)
    batches = itertools.islice(run.train_loader, skip, run.steps_per_epoch)
    total = run.steps_per_epoch - skip
    bar = progress(batches, total=total, desc=f"epoch {epoch + 1}/{cfg.trainer.epochs}")
    start, batch_in_epoch = time.perf_counter(), skip
    for images, targets in bar:
        lr = current_lr(run.optimizer)  # the LR this step uses: the schedule moves after it
        logits, loss, stepped = run.stepper.train_batch(images, targets)
        run.epoch_sums.update(logits, targets.to(logits.device, non_blocking=True), loss)
        batch_in_epoch += 1
        if not stepped:
            continue
        run.step += 1
        verdict = guard.after_step(loss, run.step)
        if verdict is not None:
            bar.close()
            halt(run, guard, verdict, epoch, batch_in_epoch)
        if run.step % cfg.trainer.log_every_steps == 0:
            _show_progress(run, bar, loss, lr)
        every = cfg.trainer.checkpoint_every_steps
        if every and run.step % every == 0 and batch_in_epoch < run.steps_per_epoch:
            checked_save(run, guard, epoch, batch_in_epoch, epoch_done=False)
        if run.done:
            break
    bar.close()
    seconds = time.perf_counter() - start
    return EpochTraining(batch_in_epoch, batch_in_epoch - skip, seconds, start_lr)


def _show_progress(run: TrainingRun, bar: object, loss: torch.Tensor, lr: float) -> None:
    """Running means on the bar; the batch loss and the step's LR to TensorBoard."""
    running = run.epoch_sums.read()
    bar.set_postfix(loss=f"{running['loss']:.4f}", acc1=f"{running['acc1']:.3f}")
    if run.tracker is not None:
        run.tracker.scalars({"train/batch_loss": loss.item(), "lr": lr}, run.step)


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
    for images, targets in progress(limited, total=num_batches, desc=desc):
        if should_stop is not None and should_stop():
            break
        with precision.autocast():
            logits = model(images).float()
        targets = targets.to(logits.device, non_blocking=True)
        sums.update(logits, targets, criterion(logits, targets))
    return sums


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])
