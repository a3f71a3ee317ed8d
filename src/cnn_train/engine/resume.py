"""Finding the checkpoint a run resumes from, and trimming what was written after it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnn_train.errors import UserError

log = logging.getLogger(__name__)
IGNORED_KEYS = ("resume",)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in IGNORED_KEYS}


def _same_config(run_dir: Path, wanted: dict[str, Any]) -> bool:
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return False
    try:
        config = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
    except Exception:  # an unreadable or foreign config is simply not a match
        return False
    return isinstance(config, dict) and _comparable(config) == wanted


def find_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint that `cfg.resume` names; None to start fresh.

    `auto`: this run folder's own last.pt (a pinned `hydra.run.dir`), else the newest last.pt of a
    run under the same outputs folder whose composed config equals this one; else start fresh.
    A path: a checkpoint file, or a run folder (its checkpoints/last.pt).
    """
    if not cfg.resume:
        return None
    if cfg.resume != "auto":
        path = Path(cfg.resume).expanduser()
        path = path / "checkpoints" / "last.pt" if path.is_dir() else path
        if not path.is_file():
            raise UserError(
                f"resume={cfg.resume}: no checkpoint there; pass a .pt file or a run folder"
            )
        return path
    own = run_dir / "checkpoints" / "last.pt"
    if own.is_file():
        return own
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    wanted = _comparable(container)
    outputs_root = run_dir.parent.parent
    candidates = [
        path
        for path in outputs_root.glob("*/*/checkpoints/last.pt")
        if path.parents[1] != run_dir and _same_config(path.parents[1], wanted)
    ]
    if not candidates:
        log.info(f"resume=auto: no earlier run of this config under {outputs_root}; starting fresh")
        return None
    return max(candidates, key=lambda path: path.stat().st_mtime)


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
