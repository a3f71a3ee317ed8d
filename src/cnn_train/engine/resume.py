"""Finding the checkpoint a run resumes from, and trimming what was written after it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from cnn_train.errors import UserError

log = logging.getLogger(__name__)


def find_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint that `cfg.resume` names; None to start fresh.

    `auto`: this run folder's own checkpoints/last.pt if there is one, else start fresh. The run
    folder is the pinned `hydra.run.dir`, or a multirun job's own folder (so a requeued job
    continues itself); another run's folder is never taken over, whatever its config.
    A path: a checkpoint file, or a run folder (its checkpoints/last.pt).
    """
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        own = run_dir / "checkpoints" / "last.pt"
        if own.is_file():
            return own
        log.info(f"resume=auto: no checkpoint in {run_dir} yet; starting fresh")
        return None
    path = Path(cfg.resume).expanduser()
    path = path / "checkpoints" / "last.pt" if path.is_dir() else path
    if not path.is_file():
        raise UserError(
            f"resume={cfg.resume}: no checkpoint there; pass a .pt file or a run folder"
        )
    return path


def trim_metrics(metrics_path: Path, first_epoch: int) -> None:
    """Drop metrics.jsonl lines of epochs from `first_epoch` on (they are about to be redone)."""
    if not metrics_path.is_file():
        return
    kept = [
        line
        for line in metrics_path.read_text().splitlines()
        if line.strip() and json.loads(line)["epoch"] < first_epoch
    ]
    metrics_path.write_text("".join(line + "\n" for line in kept))
