"""Checkpoints: atomic writes, safe loads (weights_only), and RNG state as plain values."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnn_train.errors import UserError


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` through a temporary file and a rename, so `path` is never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise UserError(f"could not write checkpoint {path}: {error.strerror or error}") from error
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or weights file with `weights_only=True` (no code runs on load)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; pass checkpoint=<run>/checkpoints/best.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad or unsafe files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise UserError(f"cannot load {path} as a weights-only checkpoint: {first_line}") from error


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
