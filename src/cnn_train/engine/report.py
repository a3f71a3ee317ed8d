"""What a run tells the user as it goes: the log, TensorBoard and metrics.jsonl (rank 0 writes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from cnn_train.engine.loop import EpochPass
from cnn_train.engine.monitor import Monitor
from cnn_train.engine.profile import StepProfiler
from cnn_train.engine.resume import trim_metrics
from cnn_train.engine.state import Progress, RunParts
from cnn_train.logs import also_log_to
from cnn_train.tracking import RunTracker, write_hparams, write_run_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Validation:
    """An epoch's validation: its metrics, the EMA model's (when kept) and the confusion matrix."""

    metrics: dict[str, float]
    ema: dict[str, float]  # val_ema_loss, val_ema_acc1, val_ema_acc5
    confusion: torch.Tensor | None
    macro_f1: float | None = None

    @property
    def record(self) -> dict[str, float]:
        """The epoch record's validation keys: val_loss, val_acc1, val_acc5 (+ EMA, macro F1)."""
        record = {f"val_{key}": self.metrics[key] for key in ("loss", "acc1", "acc5")}
        if self.macro_f1 is not None:
            record["val_macro_f1"] = self.macro_f1
        return record | self.ema


class Reporter:
    """The run's reports; on ranks other than 0 it writes nothing (`tracker` is None)."""

    def __init__(self, parts: RunParts, progress: Progress, *, resumed: bool) -> None:
        self.parts = parts
        self.tracker = open_tracker(parts, progress, resumed=resumed)
        steps = parts.cfg.trainer.profile_steps
        self.profiler = None
        if steps and parts.ctx.is_main:
            self.profiler = StepProfiler(parts.run_dir / "profile", *steps)
            self.profiler.after_step(progress.step)
        log.info(describe(parts))

    def step(self, step: int, loss: torch.Tensor, lr: float) -> None:
        """After every optimizer step: the profile's window; every `trainer.log_every_steps`,
        the batch loss and the step's LR to TensorBoard."""
        if self.profiler is not None:
            self.profiler.after_step(step)
        if self.tracker is not None and step % self.parts.cfg.trainer.log_every_steps == 0:
            self.tracker.scalars({"train/batch_loss": loss.item(), "lr": lr}, step)

    def epoch(self, progress: Progress, epoch: EpochPass, validation: Validation) -> None:
        """The epoch's line of metrics.jsonl, its TensorBoard scalars, and its log line."""
        parts, train = self.parts, progress.sums.read()  # read: a collective, every rank calls
        record = epoch_record(parts, progress, epoch, train, validation)
        if self.tracker is not None:
            self.tracker.log_epoch(record)
            if validation.macro_f1 is not None:
                self.tracker.scalars({"val/macro_f1": validation.macro_f1}, progress.step)
            names = parts.built.dataset.class_names
            self.tracker.log_validation_details(validation.confusion, names, progress.step)
            every = parts.cfg.tracking.histogram_every
            if every and (progress.epoch + 1) % every == 0:
                self.tracker.log_histograms(parts.model, parts.stepper.grad_norms, progress.step)
        val = validation.metrics
        log.info(
            f"epoch {progress.epoch + 1}/{parts.cfg.trainer.epochs} | train loss "
            f"{train['loss']:.4f} acc1 {train['acc1']:.4f} | val loss {val['loss']:.4f} acc1 "
            f"{val['acc1']:.4f} acc5 {val['acc5']:.4f} | lr {record['lr']:.4g} | "
            f"{record['images_per_sec']:.0f} img/s | {epoch.seconds:.1f} s"
        )

    def stopped_early(self, progress: Progress, monitor: Monitor) -> None:
        """Say why the run ends before its last epoch."""
        log.info(
            f"stopping early after epoch {progress.epoch + 1}: {monitor.name} has not improved "
            f"for {progress.stale_epochs} epochs (best {progress.best_metric:.4g} at epoch "
            f"{progress.best_epoch + 1})"
        )

    def finish(self, progress: Progress) -> None:
        """The run's hparams and best top-1, once it has trained every epoch."""
        if self.tracker is not None:
            best = {"val_acc1": progress.best_val_acc1, "epoch": progress.best_epoch}
            parts = self.parts
            write_hparams(self.tracker.writer, parts.run_dir, parts.config, best, progress.step)

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.profiler is not None:
            self.profiler.close()
        if self.tracker is not None:
            self.tracker.close()


def describe(parts: RunParts) -> str:
    """One line on what is trained, on what, where."""
    cfg, built = parts.cfg, parts.built
    parameters = sum(p.numel() for p in parts.model.parameters())
    return (
        f"{cfg.model.name} ({built.variant} variant, {parameters:,} parameters, "
        f"{built.num_classes} classes) on {cfg.data.name} at {built.image_size} px: "
        f"{parts.train_loader.dataset_size} train / {parts.val_loader.dataset_size} val images, "
        f"{parts.input_device} x{parts.ctx.world_size}, {parts.precision.name}"
    )


def open_tracker(parts: RunParts, progress: Progress, *, resumed: bool) -> RunTracker | None:
    """Rank 0's TensorBoard writer and metrics file (trimmed to the resumed epoch)."""
    if not parts.ctx.is_main:
        return None
    parts.run_dir.mkdir(parents=True, exist_ok=True)
    if resumed:
        trim_metrics(parts.run_dir / "metrics.jsonl", progress.next_epoch)
        also_log_to(parts.run_dir / "train.log")
    else:
        write_run_info(parts.run_dir)
    tracker = RunTracker(parts.run_dir, purge_step=progress.step if resumed else None)
    if not resumed:
        log_first_batch(parts, tracker)
    return tracker


def log_first_batch(parts: RunParts, tracker: RunTracker) -> None:
    """A grid of training images and the model graph, once (in eval mode: no state changes)."""
    tracking = parts.cfg.tracking
    if not (tracking.image_grid or tracking.graph):
        return
    parts.train_loader.set_epoch(0)
    images, _ = next(iter(parts.train_loader))
    parts.model.eval()
    dataset = parts.built.dataset
    tracker.log_start(
        parts.model,
        images,
        dataset.mean,
        dataset.std,
        image_grid=tracking.image_grid,
        graph=tracking.graph,
    )
    parts.model.train()


def epoch_record(
    parts: RunParts,
    progress: Progress,
    epoch: EpochPass,
    train: dict[str, float],
    validation: Validation,
) -> dict[str, Any]:
    """The epoch's line of metrics.jsonl."""
    skipped = parts.train_loader.skipped_files
    if skipped:
        log.warning(f"epoch {progress.epoch + 1}: skipped {skipped} unreadable image files")
    images = epoch.trained * parts.cfg.data.batch_size * parts.ctx.world_size
    return {
        "epoch": progress.epoch,
        "step": progress.step,
        "train_loss": train["loss"],
        "train_acc1": train["acc1"],
        **validation.record,
        "val_samples": validation.metrics["samples"],
        "skipped_files": skipped,
        "lr": epoch.start_lr,
        "images_per_sec": images / max(epoch.seconds, 1e-9),
        "epoch_time_s": epoch.seconds,
    }
