"""A run's parts (built once, never reassigned) and its progress (exactly what a checkpoint saves).

This module only declares the two types: `engine/setup.py` builds the parts, `engine/snapshot.py`
writes and reads the progress, and `engine/trainer.py`'s `fit` moves it forward.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnn_train.engine.metrics import MetricSums
from cnn_train.engine.monitor import Monitor

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from cnn_train.build import ModelAndData
    from cnn_train.data.loaders import Loader
    from cnn_train.distributed import DistContext
    from cnn_train.engine.precision import Precision
    from cnn_train.engine.stepper import Stepper
    from cnn_train.optim import Schedule


@dataclass(frozen=True)
class RunParts:
    """Everything one process of a run trains with; built once by `setup.build_parts`."""

    cfg: DictConfig
    ctx: DistContext
    run_dir: Path  # where this run writes: decided (resume included) before the parts are built
    built: ModelAndData
    model: nn.Module  # the plain model: its state_dict is what checkpoints hold
    train_model: nn.Module  # what the step calls: the model, DDP-wrapped and/or compiled
    input_device: torch.device
    output_device: torch.device
    precision: Precision
    config: dict[str, Any]  # the resolved config that checkpoints record
    train_loader: Loader
    val_loader: Loader
    steps_per_epoch: int  # batches per epoch, a multiple of trainer.accumulate_steps
    val_batches: int
    total_steps: int  # optimizer steps of the whole run (trainer.max_steps included)
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    stepper: Stepper

    def new_sums(self) -> MetricSums:
        """Empty running sums of the training metrics, on the device the logits come out on."""
        return MetricSums(self.output_device, self.built.topk)


@dataclass
class Progress:
    """Where a run is. Its fields are the checkpoint's progress keys, one for one.

    `epoch` is the epoch in hand (0-based); `batch_in_epoch` the next batch of it to train;
    `epoch_done` whether it is validated and recorded; `step` the optimizer steps taken.
    `best_metric` is the monitor's best value (None: none yet), at `best_epoch`, whose val top-1
    is `best_val_acc1`; `stale_epochs` counts validated epochs since the monitor last beat
    `stale_baseline` by more than early stopping's min_delta; `stopped_early` ends the run;
    `top_k` lists [value, epoch] of the kept checkpoints/best-e<EPOCH>.pt files, best first.
    `sums` (the running training metrics of this rank's epoch) is saved per rank, beside it.
    """

    total_steps: int
    epoch: int = 0
    batch_in_epoch: int = 0
    epoch_done: bool = False
    step: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    best_val_acc1: float = -1.0
    stale_epochs: int = 0
    stale_baseline: float | None = None
    stopped_early: bool = False
    top_k: list[list[float]] = field(default_factory=list)
    sums: MetricSums | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's progress keys."""
        return {key: getattr(self, key) for key in PROGRESS_KEYS}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Progress:
        """The progress that `to_dict` saved (a checkpoint's keys; others are ignored)."""
        return cls(**{key: saved[key] for key in PROGRESS_KEYS})

    @property
    def next_epoch(self) -> int:
        """The epoch that training continues with."""
        return self.epoch + 1 if self.epoch_done else self.epoch

    @property
    def mid_epoch(self) -> bool:
        """Whether an epoch was started and not yet validated."""
        return not self.epoch_done and self.batch_in_epoch > 0

    def record_epoch(
        self, value: float, val_acc1: float, monitor: Monitor, min_delta: float
    ) -> bool:
        """Note the validated epoch's monitored `value`; return whether it is the best so far."""
        improved = monitor.improves(value, self.best_metric)
        if improved:
            self.best_metric, self.best_epoch, self.best_val_acc1 = value, self.epoch, val_acc1
        if monitor.improves(value, self.stale_baseline, min_delta):
            self.stale_baseline, self.stale_epochs = value, 0
        else:
            self.stale_epochs += 1
        self.epoch_done = True
        return improved

    def rank_top_k(self, value: float, k: int, monitor: Monitor) -> tuple[bool, list[int]]:
        """Put the epoch among the `k` best (when k > 1); return whether it is kept and the
        epochs that dropped out (their best-e<EPOCH>.pt files go)."""
        if k <= 1:
            return False, []
        ranked = sorted(
            [*self.top_k, [value, self.epoch]],
            key=lambda entry: -entry[0] if monitor.mode == "max" else entry[0],
        )
        self.top_k = ranked[:k]
        dropped = [int(epoch) for _, epoch in ranked[k:]]
        return self.epoch not in dropped, dropped

    def begin_epoch(self, sums: MetricSums) -> None:
        """Move on to the next epoch (no-op when one is under way) with fresh running sums."""
        if self.epoch_done or self.batch_in_epoch == 0:
            self.epoch, self.batch_in_epoch, self.epoch_done = self.next_epoch, 0, False
            self.sums = sums
        elif self.sums is None:
            self.sums = sums


# What a checkpoint records of progress: every field but the per-rank running sums.
PROGRESS_KEYS = tuple(item.name for item in dataclasses.fields(Progress) if item.name != "sums")
