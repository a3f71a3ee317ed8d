"""A whole training run: `fit` owns its control flow (train, validate, save, stop, raise)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from cnn_train.checkpoint import remove_stale_temporaries
from cnn_train.distributed import DistContext, launch
from cnn_train.engine.evaluation import eval_pass
from cnn_train.engine.loop import (
    EpochPass,
    Reason,
    StepGuard,
    StopSignal,
    epoch_pass,
    train_one_epoch,
)
from cnn_train.engine.metrics import class_report
from cnn_train.engine.monitor import Monitor
from cnn_train.engine.report import Reporter, Validation
from cnn_train.engine.resume import find_resume_checkpoint, run_folder_of
from cnn_train.engine.setup import build_parts
from cnn_train.engine.snapshot import keep_copies, restore_run, save_run
from cnn_train.engine.state import Progress, RunParts
from cnn_train.errors import Interrupted, UserError
from cnn_train.run_lock import run_folder_lock

log = logging.getLogger(__name__)


def run_training(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train `cfg.model` on `cfg.data` into `run_dir`; return the summary of rank 0.

    With `device=ddp` this process starts one worker per GPU (or `device.num_procs` on the CPU),
    unless torchrun or SLURM already started it as one rank of a job; each rank runs `train_rank`.
    """
    return launch(cfg, run_dir, train_rank)


def train_rank(cfg: DictConfig, run_dir: Path, ctx: DistContext) -> dict[str, Any]:
    """This process's part of the run: find what it resumes, build its parts, `fit` them.

    Rank 0 holds the run folder's lock throughout; stop signals are caught once training starts.
    """
    resume_from = find_resume_checkpoint(cfg, run_dir)
    run_dir = run_folder_of(resume_from, run_dir)  # a resumed run writes into its own folder
    with run_folder_lock(run_dir, enabled=ctx.is_main):
        parts = build_parts(cfg, run_dir, ctx)
        progress = restore_run(parts, resume_from) if resume_from else Progress(parts.total_steps)
        clean_up_killed_saves(parts)
        resumed = resume_from is not None
        anomaly = torch.autograd.set_detect_anomaly(cfg.trainer.detect_anomaly)
        with StopSignal() as stop, Reporter(parts, progress, resumed=resumed) as report, anomaly:
            guard = StepGuard(parts.input_device, stop, check_finite=parts.precision.name != "fp16")
            try:
                fit(parts, progress, guard, report)
            except torch.OutOfMemoryError as error:
                raise out_of_memory_error(cfg) from error
    return summary(parts, progress)


def fit(parts: RunParts, progress: Progress, guard: StepGuard, report: Reporter) -> None:
    """Train every remaining epoch. The one owner of the run's control flow: it trains,
    validates, saves, decides to stop and raises; the loop only says why it stopped.

    Every stop inside an epoch saves the state as it stands, before any validation: a stop
    signal, a mid-epoch checkpoint, and the run's last step (`trainer.max_steps`) when it falls
    before the epoch's end. A resume continues that epoch at its next batch, so it ends as a
    straight run does. The epoch that `trainer.max_steps` cut is still validated and reported
    (metrics.jsonl, best.pt), but checkpoints/last.pt keeps it unfinished: a resume with more
    steps finishes it, and redoes its validation and its line of metrics.jsonl.

    `trainer.max_steps` is the run's length: the per-iteration schedules (`onecycle`, `cosine`)
    span its steps. A resume that lengthens the run rebuilds them for the new length, so only
    the constant and per-epoch schedules match a straight run's weights bit for bit.
    """
    monitor = Monitor.named(parts.cfg.trainer.monitor)
    while more_to_train(parts, progress):
        epoch = epoch_pass(parts, progress)
        cut = train_epoch(parts, progress, epoch, guard, report)
        epoch.finish()
        resume_point = save_run(parts, progress) if cut else None
        validation = validate_epoch(parts, guard.stop)
        if guard.stop_agreed():  # validation was cut short: save, and redo it on resume
            raise interrupted(guard.stop, resume_point if cut else save_run(parts, progress))
        improved, kept, dropped = record_validation(parts, progress, validation, cut=cut)
        report.epoch(progress, epoch, validation)
        saved = resume_point if cut else save_run(parts, progress)
        keep_copies(parts, progress, saved, best=improved, top_k=kept, dropped=dropped)
        if cut:
            break
        if progress.stopped_early:
            report.stopped_early(progress, monitor)
    report.finish(progress)


def train_epoch(
    parts: RunParts, progress: Progress, epoch: EpochPass, guard: StepGuard, report: Reporter
) -> bool:
    """Train the epoch in hand, saving mid-epoch as the loop asks; raise on a non-finite loss,
    or on a stop signal once saved. Return whether the run's last step came before its end."""
    while halt := guard.settle(train_one_epoch(parts, progress, epoch, guard, report.step)):
        if halt.reason is Reason.NONFINITE:
            raise nonfinite_error(parts.cfg, halt.step)
        if halt.reason is Reason.BUDGET:
            return True
        saved = save_run(parts, progress)  # a signal came, or a mid-epoch save is due
        if halt.reason is Reason.SIGNAL:
            raise interrupted(guard.stop, saved)
    return False


def record_validation(
    parts: RunParts, progress: Progress, validation: Validation, *, cut: bool
) -> tuple[bool, bool, list[int]]:
    """Note the epoch's validation in `progress` and step the per-epoch schedules; return
    whether it is the best so far, whether it is among the top k, and the epochs that dropped
    out of the top k. An epoch `cut` short by the run's last step only counts towards the
    run's result: it neither moves the schedule nor stops the run early."""
    trainer = parts.cfg.trainer
    monitor = Monitor.named(trainer.monitor)
    value = validation.record[monitor.record_key]
    if not cut:
        parts.schedule.step_epoch(value)
    improved = progress.record_epoch(
        value, validation.metrics["acc1"], monitor, trainer.early_stopping_min_delta
    )
    kept, dropped = progress.rank_top_k(value, trainer.save_top_k, monitor)
    patience = trainer.early_stopping_patience
    progress.stopped_early = not cut and bool(patience) and progress.stale_epochs >= patience
    return improved, kept, dropped


def more_to_train(parts: RunParts, progress: Progress) -> bool:
    """Whether an epoch is left: one under way, or a next one within the epochs and steps."""
    if progress.stopped_early:
        return False
    if progress.mid_epoch:
        return True
    return progress.next_epoch < parts.cfg.trainer.epochs and progress.step < parts.total_steps


def validate_epoch(parts: RunParts, stop: StopSignal) -> Validation:
    """The epoch's validation metrics, the EMA model's when it is kept, and the confusion."""

    def stopping() -> bool:
        return stop.received is not None

    settings = {"precision": parts.precision, "topk": parts.built.topk, "should_stop": stopping}
    # DDP's forward broadcasts buffers, a collective: a rank with fewer (or no) validation
    # batches than another would leave it waiting, so ranks evaluate the plain model.
    model = parts.model if parts.ctx.world_size > 1 else parts.train_model
    val = eval_pass(
        model,
        parts.val_loader,
        parts.val_batches,
        num_classes=parts.built.num_classes,
        **settings,
    )
    ema: dict[str, float] = {}
    if parts.stepper.ema is not None and not stopping():
        sums = eval_pass(
            parts.stepper.ema.module,
            parts.val_loader,
            parts.val_batches,
            desc="val (EMA)",
            **settings,
        )
        ema = {f"val_ema_{key}": value for key, value in sums.read().items() if key != "samples"}
    confusion = val.confusion_matrix()  # the reads are collectives: every rank calls them
    report = (
        class_report(confusion, parts.built.dataset.class_names) if confusion is not None else {}
    )
    return Validation(val.read(), ema, confusion, report.get("macro_f1"))


def clean_up_killed_saves(parts: RunParts) -> None:
    """Remove the temporary files of saves that were killed (rank 0, holding the lock)."""
    if parts.ctx.is_main:
        for temporary in remove_stale_temporaries(parts.run_dir / "checkpoints"):
            log.info(f"removed {temporary.name}, left by a save that was killed")


def interrupted(stop: StopSignal, saved: Path | None) -> Interrupted:
    """The exception that ends a run stopped by a signal, after its state was saved."""
    signal_number = stop.received or signal.SIGTERM
    log.info(f"stopping on signal {signal_number}; saved {saved}")
    return Interrupted(signal_number, str(saved))


def nonfinite_error(cfg: DictConfig, step: int) -> UserError:
    """The one-line error for a loss that became NaN or infinite at `step`."""
    return UserError(
        f"the loss became non-finite at step {step}; no checkpoint was written after it; lower "
        f"optimizer.lr (now {cfg.optimizer.lr}) or set trainer.grad_clip_norm"
    )


def out_of_memory_error(cfg: DictConfig) -> UserError:
    """The one-line error for a device that ran out of memory."""
    size = cfg.data.batch_size
    return UserError(
        f"CUDA out of memory at data.batch_size={size}; try data.batch_size={size // 2}"
        " or trainer.precision=bf16"
    )


def summary(parts: RunParts, progress: Progress) -> dict[str, Any]:
    """What the run returns: its best epoch and where it wrote."""
    return {
        "best_val_acc1": progress.best_val_acc1,
        "best_epoch": progress.best_epoch,
        "monitor": parts.cfg.trainer.monitor,
        "best_metric": progress.best_metric,
        "stopped_early": progress.stopped_early,
        "stop_epoch": progress.epoch if progress.stopped_early else None,
        "step": progress.step,
        "run_dir": str(parts.run_dir),
        "is_main": parts.ctx.is_main,
    }
