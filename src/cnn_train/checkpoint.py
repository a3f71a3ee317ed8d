"""Checkpoints: atomic writes (`files.py`), safe loads (weights_only), RNG state as plain values."""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from cnn_train.errors import UserError, first_line
from cnn_train.files import TEMPORARY_SUFFIX, write_atomically

RUN_KEYS = ("config", "class_names", "preprocessing")
TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "ema", "ema_updates")


def checkpoint_contents(
    model: nn.Module,
    training: Mapping[str, Any],
    progress: Mapping[str, Any],
    run: Mapping[str, Any],
    per_rank: Mapping[str, list[Any]],
) -> dict[str, Any]:
    """Everything a checkpoint holds, as plain values that load with `weights_only=True`.

    `training`: optimizer, scheduler, scaler and EMA states; `progress`: where the run is
    (`engine.state.Progress.to_dict()`); `run`: what it trains on (RUN_KEYS); `per_rank`: `rng`
    and `train_sums`, one entry per rank of the job.
    """
    for name, part, keys in (
        ("training", training, TRAINING_KEYS),
        ("run", run, RUN_KEYS),
        ("per_rank", per_rank, ("rng", "train_sums")),
    ):
        missing = set(keys) - set(part)
        if missing:
            raise ValueError(f"checkpoint {name} lacks {sorted(missing)}")
    return {"model": model.state_dict(), **training, **progress, **run, **per_rank}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically: a failure leaves the previous checkpoint intact."""
    write_atomically(path, lambda handle: torch.save(state, handle), what="checkpoint")


def copy_checkpoint(source: Path, target: Path) -> None:
    """Copy a written checkpoint (last.pt to best.pt) atomically."""

    def copy(handle: BinaryIO) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, handle)

    write_atomically(target, copy, what="checkpoint")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left (call it holding the run folder's lock)."""
    removed = sorted(folder.glob(f".*{TEMPORARY_SUFFIX}")) if folder.is_dir() else []
    for temporary in removed:
        temporary.unlink(missing_ok=True)
    return removed


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or weights file with `weights_only=True` (no code runs on load)."""
    path = Path(path).expanduser()
    if path.is_dir():
        inside = path / "checkpoints" / "best.pt"
        hint = inside if inside.is_file() else "<run>/checkpoints/best.pt"
        raise UserError(f"{path} is a folder, not a checkpoint file; pass {hint}")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; pass <run>/checkpoints/best.pt")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes), not a checkpoint; pass another checkpoint")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad or unsafe files
        raise UserError(f"cannot load {path}: {_load_failure(error)}") from error
    if not isinstance(loaded, dict):
        raise UserError(f"{path} holds a {type(loaded).__name__}, not a checkpoint (a dict)")
    return loaded


def require_run_checkpoint(state: dict[str, Any], path: str | Path, keys: Sequence[str]) -> None:
    """Refuse, in one line, a file that lacks what a cnn-train checkpoint holds (`keys`)."""
    missing = [key for key in keys if key not in state]
    if not missing:
        return
    if "config" not in state or "model" not in state:
        raise UserError(f"{path} is a weights file, not a cnn-train checkpoint; pass a best.pt")
    raise UserError(
        f"{path} is not a complete cnn-train checkpoint (it lacks {', '.join(missing[:3])}); "
        "pass a checkpoint that cnn-train wrote"
    )


def _load_failure(error: Exception) -> str:
    """Why a load failed, in words for a user who cannot change how it is loaded."""
    text = first_line(error)
    if "Weights only load failed" in str(error):
        return (
            "it holds Python objects beyond tensors and plain values, which cnn-train never "
            "unpickles; pass a cnn-train checkpoint or a state_dict saved with torch.save"
        )
    detail = f"{type(error).__name__}: {text[:120]}" if text else type(error).__name__
    return f"the file is cut short, damaged or not a PyTorch checkpoint ({detail})"


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors, lists and numbers (weights_only-loadable)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": keys.tolist(),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states that `capture_rng` took."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = state["numpy"]
    keys = np.array(numpy["keys"], dtype=np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


WEIGHT_CHOICES = ("auto", "model", "ema")


def chosen_weights(state: dict[str, Any], choice: str, path: str | Path) -> dict[str, Any]:
    """The state_dict that `weights=` picks from a cnn-train checkpoint: `model`, `ema`, or
    `auto`, the ones the run's monitor chose (the EMA's for a `val_ema/*` monitor)."""
    if choice not in WEIGHT_CHOICES:
        raise UserError(f"weights={choice} is not one of {', '.join(WEIGHT_CHOICES)}")
    if choice == "auto":
        monitor = str(state.get("config", {}).get("trainer", {}).get("monitor", ""))
        choice = "ema" if monitor.startswith("val_ema/") else "model"
    if choice == "ema" and not state.get("ema"):
        raise UserError(
            f"weights=ema: {path} holds no EMA weights (the run had no trainer.ema_decay); "
            "use weights=model"
        )
    return state[choice]
