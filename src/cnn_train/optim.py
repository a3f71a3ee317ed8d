"""Optimizers and LR schedules: one builder per `configs/optimizer/*` and `configs/scheduler/*`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim import lr_scheduler

from cnn_train.errors import UserError

OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], DictConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, cfg: torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    ),
    "adamw": lambda params, cfg: torch.optim.AdamW(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
    ),
}


@dataclass
class Schedule:
    """An LR scheduler and whether it steps after every iteration or every epoch."""

    scheduler: lr_scheduler.LRScheduler | None
    per_iteration: bool

    def step_iteration(self) -> None:
        """Advance a per-iteration schedule."""
        if self.scheduler is not None and self.per_iteration:
            self.scheduler.step()

    def step_epoch(self) -> None:
        """Advance a per-epoch schedule."""
        if self.scheduler is not None and not self.per_iteration:
            self.scheduler.step()


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer that `cfg.name` names, over the model's trainable parameters."""
    if cfg.name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer '{cfg.name}'; choose one of: {', '.join(OPTIMIZERS)}")
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS[cfg.name](params, cfg)


def build_schedule(
    cfg: DictConfig, optimizer: torch.optim.Optimizer, total_steps: int, lr: float
) -> Schedule:
    """The LR schedule that `cfg.name` names, for a run of `total_steps` iterations."""
    total_steps = max(total_steps, 1)
    if cfg.name == "none":
        return Schedule(None, per_iteration=False)
    if cfg.name == "step":
        return Schedule(lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma), False)
    if cfg.name == "cosine":
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=cfg.min_lr)
        return Schedule(cosine, per_iteration=True)
    if cfg.name == "onecycle":
        # OneCycleLR divides by each phase's length; a very short run still needs both phases.
        onecycle = lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=max(total_steps, math.ceil(2 / cfg.pct_start) + 1),
            pct_start=cfg.pct_start,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
        )
        return Schedule(onecycle, per_iteration=True)
    raise UserError(f"unknown scheduler '{cfg.name}'; choose one of: none, step, cosine, onecycle")
