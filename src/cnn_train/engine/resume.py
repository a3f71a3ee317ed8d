"""Finding the checkpoint a run resumes from, and trimming what was written after it."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cnn_train.checkpoint import RUN_KEYS, TRAINING_KEYS, require_run_checkpoint
from cnn_train.engine.state import PROGRESS_KEYS
from cnn_train.errors import UserError
from cnn_train.schema import SCHEMAS, TrainConfig, TrainerConfig

log = logging.getLogger(__name__)


RESTART_COUNTERS = ("SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT")


def restarted_by_launcher() -> bool:
    """Whether SLURM (a requeue) or torchrun (a restart of the group) started this job again."""
    return any(int(os.environ.get(name) or 0) > 0 for name in RESTART_COUNTERS)


def find_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint that `cfg.resume` names; None to start fresh.

    `auto`: this run folder's own checkpoints/last.pt if there is one, else start fresh. The run
    folder is the pinned `hydra.run.dir`, or a multirun job's own folder (so a requeued job
    continues itself); another run's folder is never taken over, whatever its config.
    A path: a checkpoint file, or a run folder (its checkpoints/last.pt).
    A job that SLURM requeued or torchrun restarted resumes as with `auto`, unasked.
    """
    resume = cfg.resume or ("auto" if restarted_by_launcher() else None)
    if not resume:
        return None
    if resume == "auto":
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


def run_folder_of(checkpoint: Path | None, run_dir: Path) -> Path:
    """The folder a run writes to: a resumed run's own (`<run>/checkpoints/last.pt`), else
    `run_dir`. Decided before anything is built, so the run holds one folder's lock."""
    if checkpoint is not None and checkpoint.parent.name == "checkpoints":
        return checkpoint.parents[1]
    return run_dir


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


RESUME_KEYS = (*PROGRESS_KEYS, *RUN_KEYS, *TRAINING_KEYS, "model", "rng", "train_sums")
RESUME_SECTIONS = ("model", "data", "optimizer", "trainer")
# Settings a resumed run may change: where the data is read from and how, and the run's length,
# logging and saving. Everything else changes the result, so it must be the checkpoint's.
CHANGEABLE_ON_RESUME = frozenset(
    {"data.root", "data.num_workers", "data.download", "model.weights", "model.freeze_features"}
    | {
        f"trainer.{key}"
        for key in (
            "epochs",
            "max_steps",
            "log_every_steps",
            "checkpoint_every_steps",
            "profile_steps",
            "save_top_k",
            "save_every_epochs",
            "detect_anomaly",
        )
    }
)


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}.{key}"))
    return flat


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a resolved config that a resumed run must keep, flat (`seed`,
    `trainer.label_smoothing`...); of the scheduler only its kind (its state fits only its kind)."""
    flat = {"seed": config.get("seed"), "scheduler.name": config["scheduler"]["name"]}
    for section in RESUME_SECTIONS:
        flat.update(_flatten(config.get(section, {}), section))
    return flat


def _schema_default(key: str) -> Any:
    """The schema's default of `key`: the value of a setting that an older checkpoint predates."""
    section, _, name = key.rpartition(".")
    schemas = {"": [TrainConfig], "trainer": [TrainerConfig]}
    schemas.update({group: list(options.values()) for group, options in SCHEMAS.items()})
    for schema in schemas.get(section, []):
        for item in dataclasses.fields(schema):
            if item.name == name and item.default is not dataclasses.MISSING:
                return item.default
            if item.name == name and item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
    return None


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_resumable(
    saved: dict[str, Any],
    config: dict[str, Any],
    path: Path,
    class_names: Sequence[str] | None = None,
) -> None:
    """Resume exactly or not at all: refuse a checkpoint whose settings differ, in one line.

    `config` is the new run's resolved config, `class_names` its data's classes. The model,
    data, optimizer, every `trainer.*` key, `seed`, the kind of schedule and the class names
    must be the checkpoint's; the keys of CHANGEABLE_ON_RESUME (the data's location, the run's
    length, logging and saving) may change. A setting the checkpoint predates counts as its
    schema default.
    """
    require_run_checkpoint(saved, path, RESUME_KEYS)
    old, new = _settings(saved["config"]), _settings(config)
    changed = [
        f"{key} ({old.get(key, _schema_default(key))} -> {new.get(key)})"
        for key in sorted(set(old) | set(new), key=lambda key: (not key.endswith(".name"), key))
        if key not in CHANGEABLE_ON_RESUME
        and old.get(key, _schema_default(key)) != new.get(key, _schema_default(key))
    ]
    if class_names is not None and list(class_names) != list(saved["class_names"]):
        changed.insert(
            0, f"class names ({_names(saved['class_names'])} -> {_names(list(class_names))})"
        )
    if changed:
        shown = ", ".join(changed[:4]) + (
            f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        )
        raise UserError(
            f"{path} was trained with other settings: {shown}; resume with the run's own "
            "settings, or start a new run without resume="
        )
