"""A whole training run: set up, then per epoch train, evaluate, and record, track, checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from cnn_train.checkpoint import remove_stale_temporaries
from cnn_train.distributed import DistContext, launch
from cnn_train.engine.guards import StepGuard, StopSignal
from cnn_train.engine.loop import EpochTraining, evaluate, train_one_epoch
from cnn_train.engine.metrics import MetricSums
from cnn_train.engine.resume import find_resume_checkpoint, trim_metrics
from cnn_train.engine.setup import TrainingRun, setup_run
from cnn_train.engine.snapshot import (
    checked_save,
    halt,
    mark_best,
    nonfinite_error,
    restore_run,
)
from cnn_train.errors import UserError
from cnn_train.logs import also_log_to
from cnn_train.run_lock import run_folder_lock
from cnn_train.tracking import RunTracker, write_hparams, write_run_info

log = logging.getLogger(__name__)


def fit(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train `cfg.model` on `cfg.data` into `run_dir`; return the summary of rank 0.

    With `device=ddp` this process starts one worker per GPU (or `device.num_procs` on the CPU),
    unless torchrun or SLURM already started it as one rank of a job.
    """
    return launch(cfg, run_dir, train)


def train(cfg: DictConfig, run_dir: Path, ctx: DistContext) -> dict[str, Any]:
    """This process's part of the run (rank 0 holds the run folder's lock throughout)."""
    with run_folder_lock(run_dir, enabled=ctx.is_main):
        run = setup_run(cfg, run_dir, ctx)
        resume_from = find_resume_checkpoint(cfg, run_dir)
        if resume_from is not None:
            restore_run(run, resume_from)
        if run.run_dir == run_dir:
            return train_epochs(run, resumed=resume_from is not None)
        with run_folder_lock(run.run_dir, enabled=ctx.is_main):  # resumed into another run's
            return train_epochs(run, resumed=True)


def train_epochs(run: TrainingRun, *, resumed: bool) -> dict[str, Any]:
    """Every remaining epoch, then the run's hparams; return the summary."""
    cfg, ctx = run.cfg, run.ctx
    if ctx.is_main:
        for temporary in remove_stale_temporaries(run.run_dir / "checkpoints"):
            log.info(f"removed {temporary.name}, left by a save that was killed")
    run.tracker = open_tracker(run, resumed=resumed)
    log.info(describe(run))
    try:
        with StopSignal() as stop:
            guard = StepGuard(run.input_device, stop, check_finite=run.precision.name != "fp16")
            for epoch in range(run.start_epoch, cfg.trainer.epochs):
                unfinished = epoch == run.start_epoch and run.resume_batch > 0
                if run.done and not unfinished:
                    break
                training = train_one_epoch(run, epoch, guard)
                end_epoch(run, epoch, training, guard)
        if run.tracker is not None:
            best = {"val_acc1": run.best_acc1, "epoch": run.best_epoch}
            write_hparams(run.tracker.writer, run.run_dir, run.config, best, run.step)
    except torch.OutOfMemoryError as error:
        size = cfg.data.batch_size
        raise UserError(
            f"CUDA out of memory at data.batch_size={size}; try data.batch_size={size // 2}"
            " or trainer.precision=bf16"
        ) from error
    finally:
        if run.tracker is not None:
            run.tracker.close()
    return {
        "best_val_acc1": run.best_acc1,
        "best_epoch": run.best_epoch,
        "step": run.step,
        "run_dir": str(run.run_dir),
        "is_main": ctx.is_main,
    }


def describe(run: TrainingRun) -> str:
    """One line on what is trained, on what, where."""
    cfg, built = run.cfg, run.built
    parameters = sum(p.numel() for p in run.model.parameters())
    return (
        f"{cfg.model.name} ({built.variant} variant, {parameters:,} parameters, "
        f"{built.num_classes} classes) on {cfg.data.name} at {built.image_size} px: "
        f"{run.train_loader.dataset_size} train / {run.val_loader.dataset_size} val images, "
        f"{run.input_device} x{run.ctx.world_size}, {run.precision.name}"
    )


def open_tracker(run: TrainingRun, *, resumed: bool) -> RunTracker | None:
    """Rank 0's TensorBoard writer and metrics file (trimmed to the resumed epoch)."""
    if not run.ctx.is_main:
        return None
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if resumed:
        trim_metrics(run.run_dir / "metrics.jsonl", run.start_epoch)
        also_log_to(run.run_dir / "train.log")
    else:
        write_run_info(run.run_dir)
    tracker = RunTracker(run.run_dir, purge_step=run.step if resumed else None)
    if not resumed:
        log_first_batch(run, tracker)
    return tracker


def log_first_batch(run: TrainingRun, tracker: RunTracker) -> None:
    """A grid of training images and the model graph, once (in eval mode: no state changes)."""
    tracking = run.cfg.tracking
    if not (tracking.image_grid or tracking.graph):
        return
    run.train_loader.set_epoch(0)
    images, _ = next(iter(run.train_loader))
    run.model.eval()
    dataset = run.built.dataset
    tracker.log_start(
        run.model,
        images,
        dataset.mean,
        dataset.std,
        image_grid=tracking.image_grid,
        graph=tracking.graph,
    )
    run.model.train()


def validate(run: TrainingRun, stop: StopSignal) -> tuple[MetricSums, dict[str, float]]:
    """The epoch's validation sums, and the EMA model's metrics when it is kept."""

    def stopping() -> bool:
        return stop.received is not None

    settings = {"precision": run.precision, "topk": run.built.topk, "should_stop": stopping}
    val = evaluate(
        run.train_model,
        run.val_loader,
        run.val_batches,
        num_classes=run.built.num_classes,
        **settings,
    )
    ema: dict[str, float] = {}
    if run.stepper.ema is not None and not stopping():
        sums = evaluate(
            run.stepper.ema.module, run.val_loader, run.val_batches, desc="val (EMA)", **settings
        )
        ema = {f"val_ema_{key}": value for key, value in sums.read().items() if key != "samples"}
    return val, ema


def end_epoch(run: TrainingRun, epoch: int, training: EpochTraining, guard: StepGuard) -> None:
    """Validate; then record, track and checkpoint the epoch, and say how it went."""
    verdict = guard.settle()
    if verdict is not None and verdict[0] == "nonfinite":
        raise nonfinite_error(run, verdict[1])
    train = run.epoch_sums.read()
    val_sums, ema = validate(run, guard.stop)
    if guard.stop_agreed():  # validation was cut short: save to redo it on resume
        halt(run, guard, ("signal", run.step), epoch, training.batch_in_epoch)
    val = val_sums.read()
    run.schedule.step_epoch(val["acc1"])
    record = epoch_record(run, epoch, training, train, val) | ema
    is_best = val["acc1"] > run.best_acc1
    if is_best:
        run.best_acc1, run.best_epoch = val["acc1"], epoch
    confusion = val_sums.confusion_matrix()  # a collective: every rank calls it
    if run.tracker is not None:
        run.tracker.log_epoch(record)
        names = run.built.dataset.class_names
        run.tracker.log_validation_details(confusion, names, run.step)
        every = run.cfg.tracking.histogram_every
        if every and (epoch + 1) % every == 0:
            run.tracker.log_histograms(run.model, run.stepper.grad_norms, run.step)
    path = checked_save(run, guard, epoch, training.batch_in_epoch, epoch_done=True)
    if is_best:
        mark_best(path)
    log.info(
        f"epoch {epoch + 1}/{run.cfg.trainer.epochs} | train loss {train['loss']:.4f} "
        f"acc1 {train['acc1']:.4f} | val loss {val['loss']:.4f} acc1 {val['acc1']:.4f} "
        f"acc5 {val['acc5']:.4f} | lr {record['lr']:.4g} | {record['images_per_sec']:.0f} img/s"
        f" | {training.seconds:.1f} s"
    )


def epoch_record(
    run: TrainingRun,
    epoch: int,
    training: EpochTraining,
    train: dict[str, float],
    val: dict[str, float],
) -> dict[str, Any]:
    """The epoch's line of metrics.jsonl."""
    skipped = run.train_loader.skipped_files
    if skipped:
        log.warning(f"epoch {epoch + 1}: skipped {skipped} unreadable image files")
    images = training.trained * run.cfg.data.batch_size * run.ctx.world_size
    return {
        "epoch": epoch,
        "step": run.step,
        "train_loss": train["loss"],
        "train_acc1": train["acc1"],
        "val_loss": val["loss"],
        "val_acc1": val["acc1"],
        "val_acc5": val["acc5"],
        "val_samples": val["samples"],
        "skipped_files": skipped,
        "lr": training.start_lr,
        "images_per_sec": images / max(training.seconds, 1e-9),
        "epoch_time_s": training.seconds,
    }
