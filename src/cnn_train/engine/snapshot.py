"""Saving a run's whole state to checkpoints/last.pt, and putting it back on resume."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import NoReturn

from cnn_train.checkpoint import (
    capture_rng,
    checkpoint_contents,
    copy_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from cnn_train.data.preprocessing import preprocessing_of
from cnn_train.distributed import all_gather_objects
from cnn_train.engine.guards import StepGuard
from cnn_train.engine.resume import check_resumable
from cnn_train.engine.setup import TrainingRun
from cnn_train.errors import Interrupted, UserError

log = logging.getLogger(__name__)


def save_run(run: TrainingRun, epoch: int, batch_in_epoch: int, *, epoch_done: bool) -> Path | None:
    """Write checkpoints/last.pt (rank 0); every rank contributes its RNG and metric state."""
    rng = all_gather_objects(capture_rng())
    sums = all_gather_objects(run.epoch_sums.sums.cpu())
    if not run.ctx.is_main:
        return None
    progress = {
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "epoch_done": epoch_done,
        "step": run.step,
        "total_steps": run.total_steps,
        "best_metric": run.best_acc1,
        "best_epoch": run.best_epoch,
    }
    about = {
        "config": run.config,
        "class_names": list(run.built.dataset.class_names),
        "preprocessing": preprocessing_of(
            run.built.dataset, run.built.image_size, run.cfg.data.augment
        ),
    }
    state = checkpoint_contents(
        run.model, run.stepper.state_dict(), progress, about, {"rng": rng, "train_sums": sums}
    )
    path = run.run_dir / "checkpoints" / "last.pt"
    save_checkpoint(path, state)
    return path


def nonfinite_error(run: TrainingRun, step: int) -> UserError:
    """The one-line error for a loss that became NaN or infinite at `step`."""
    return UserError(
        f"the loss became non-finite at step {step}; no checkpoint was written after it; lower "
        f"optimizer.lr (now {run.cfg.optimizer.lr}) or set trainer.grad_clip_norm"
    )


def checked_save(
    run: TrainingRun, guard: StepGuard, epoch: int, batch_in_epoch: int, *, epoch_done: bool
) -> Path | None:
    """Save, after reading the last step's verdict: weights from a non-finite step are never
    written; a stop signal that arrived meanwhile ends the run after the save."""
    verdict = guard.settle()
    if verdict is not None and verdict[0] == "nonfinite":
        raise nonfinite_error(run, verdict[1])
    path = save_run(run, epoch, batch_in_epoch, epoch_done=epoch_done)
    if verdict is not None:
        _interrupted(run, guard, path)
    return path


def halt(
    run: TrainingRun, guard: StepGuard, verdict: tuple[str, int], epoch: int, batch_in_epoch: int
) -> NoReturn:
    """End the run on a guard verdict: a non-finite loss at once, a stop signal after a save."""
    if verdict[0] == "nonfinite":
        raise nonfinite_error(run, verdict[1])
    path = checked_save(run, guard, epoch, batch_in_epoch, epoch_done=False)
    _interrupted(run, guard, path)


def _interrupted(run: TrainingRun, guard: StepGuard, path: Path | None) -> NoReturn:
    signal_number = guard.stop.received or signal.SIGTERM
    log.info(f"stopping on signal {signal_number}; saved {path}")
    raise Interrupted(signal_number, str(path))


def mark_best(path: Path | None) -> None:
    """Copy the last.pt just written to best.pt."""
    if path is not None:
        copy_checkpoint(path, path.with_name("best.pt"))


def restore_run(run: TrainingRun, path: Path) -> None:
    """Put a saved state back: weights, optimizer and schedule, counters, RNG, epoch sums."""
    saved = load_checkpoint(path)
    check_resumable(saved, run.config, path)
    run.model.load_state_dict(saved["model"])
    same_schedule = saved["total_steps"] == run.total_steps
    if not same_schedule:
        log.warning(
            f"the run's length changed ({saved['total_steps']} -> {run.total_steps} steps): "
            "the LR schedule is rebuilt for the new length and advanced to the saved step"
        )
    run.stepper.load_state_dict(saved, same_schedule=same_schedule)
    run.step = saved["step"]
    run.best_acc1, run.best_epoch = saved["best_metric"], saved["best_epoch"]
    if saved["epoch_done"]:
        run.start_epoch = saved["epoch"] + 1
    else:
        run.start_epoch, run.resume_batch = saved["epoch"], saved["batch_in_epoch"]
        sums = saved["train_sums"]
        if run.ctx.rank < len(sums):  # a rank the saved job did not have starts from zero
            run.epoch_sums.sums.copy_(sums[run.ctx.rank])
    restore_rng(saved["rng"][min(run.ctx.rank, len(saved["rng"]) - 1)])
    if path.parent.name == "checkpoints":
        run.run_dir = path.parents[1]
    log.info(
        f"resumed from {path} at epoch {run.start_epoch + 1}, batch {run.resume_batch}, "
        f"step {run.step}; writing into {run.run_dir}"
    )
