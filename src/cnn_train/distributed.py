"""Where a run computes: device resolution (more devices and process groups build on this)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from cnn_train.errors import UserError


def resolve_device(cfg: DictConfig) -> torch.device:
    """The torch device for `device.name`: auto picks CUDA when a GPU is visible, else the CPU."""
    if cfg.name == "cpu":
        return torch.device("cpu")
    if cfg.name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
        return torch.device("cuda", 0)
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
