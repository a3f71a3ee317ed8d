"""Saving a run's whole state to checkpoints/last.pt, and putting it back on resume."""

from __future__ import annotations

import logging
from pathlib import Path

from cnn_train.checkpoint import (
    capture_rng,
    checkpoint_contents,
    copy_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from cnn_train.data.preprocessing import data_eval_preprocessing
from cnn_train.distributed import all_gather_objects
from cnn_train.engine.resume import check_resumable
from cnn_train.engine.state import Progress, RunParts

log = logging.getLogger(__name__)


def save_run(parts: RunParts, progress: Progress) -> Path | None:
    """Write checkpoints/last.pt (rank 0); every rank contributes its RNG and metric state."""
    rng = all_gather_objects(capture_rng())
    sums = all_gather_objects(progress.sums.sums.cpu())
    if not parts.ctx.is_main:
        return None
    built = parts.built
    about = {
        "config": parts.config,
        "class_names": list(built.dataset.class_names),
        "preprocessing": data_eval_preprocessing(
            built.dataset, built.image_size, parts.cfg.data
        ).to_record(),
    }
    state = checkpoint_contents(
        parts.model,
        parts.stepper.state_dict(),
        progress.to_dict(),
        about,
        {"rng": rng, "train_sums": sums},
    )
    path = parts.run_dir / "checkpoints" / "last.pt"
    save_checkpoint(path, state)
    return path


def keep_copies(
    parts: RunParts,
    progress: Progress,
    saved: Path | None,
    *,
    best: bool,
    top_k: bool,
    dropped: list[int],
) -> None:
    """Copy the epoch's last.pt to the files that keep it (rank 0): best.pt when it is the best
    (`trainer.save_top_k` >= 1), best-e<EPOCH>.pt among the K best, epoch-<EPOCH>.pt every
    `trainer.save_every_epochs`; remove the best-e<EPOCH>.pt files that dropped out."""
    if saved is None:
        return
    trainer, folder, epoch = parts.cfg.trainer, saved.parent, progress.epoch
    if best and trainer.save_top_k >= 1:
        copy_checkpoint(saved, folder / "best.pt")
    if top_k:
        copy_checkpoint(saved, folder / f"best-e{epoch}.pt")
    for old in dropped:
        (folder / f"best-e{old}.pt").unlink(missing_ok=True)
    every = trainer.save_every_epochs
    if every and (epoch + 1) % every == 0:
        copy_checkpoint(saved, folder / f"epoch-{epoch}.pt")


def restore_run(parts: RunParts, path: Path) -> Progress:
    """Put a saved state back (weights, optimizer and schedule, RNG) and return its progress."""
    saved = load_checkpoint(path)
    check_resumable(saved, parts.config, path, parts.built.dataset.class_names)
    parts.model.load_state_dict(saved["model"])
    same_schedule = saved["total_steps"] == parts.total_steps
    if not same_schedule:
        log.warning(
            f"the run's length changed ({saved['total_steps']} -> {parts.total_steps} steps): "
            "the LR schedule is rebuilt for the new length and advanced to the saved step"
        )
    parts.stepper.load_state_dict(saved, same_schedule=same_schedule)
    progress = Progress.from_dict(saved)
    progress.total_steps = parts.total_steps
    progress.sums = parts.new_sums()
    rank = parts.ctx.rank
    if progress.mid_epoch and rank < len(saved["train_sums"]):  # a new rank starts from zero
        progress.sums.sums.copy_(saved["train_sums"][rank])
    restore_rng(saved["rng"][min(rank, len(saved["rng"]) - 1)])
    log.info(
        f"resumed from {path} at epoch {progress.next_epoch + 1}, batch "
        f"{0 if progress.epoch_done else progress.batch_in_epoch}, step {progress.step}; "
        f"writing into {parts.run_dir}"
    )
    return progress
