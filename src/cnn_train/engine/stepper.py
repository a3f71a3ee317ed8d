"""How batches become optimizer steps: precision, accumulation, clipping, MixUp/CutMix, EMA."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnn_train.engine.precision import Precision
from cnn_train.optim import Schedule

if TYPE_CHECKING:  # configs are read by key here; the import stays lazy for tools without Hydra
    from omegaconf import DictConfig


@dataclass(frozen=True)
class StepSettings:
    """What a step does besides forward, backward and the optimizer (the run's config says)."""

    label_smoothing: float
    accumulate_steps: int
    grad_clip_norm: float | None
    ema_decay: float | None
    mixup_alpha: float
    cutmix_alpha: float
    class_weights: tuple[float, ...] | None = None  # the loss's weight of each class

    @classmethod
    def from_config(cls, cfg: DictConfig) -> StepSettings:
        """The settings of a composed train config (`trainer.*`, `data.mixup/cutmix_alpha`)."""
        trainer = cfg.trainer
        return cls(
            label_smoothing=trainer.label_smoothing,
            accumulate_steps=trainer.accumulate_steps,
            grad_clip_norm=trainer.grad_clip_norm,
            ema_decay=trainer.ema_decay,
            mixup_alpha=cfg.data.mixup_alpha,
            cutmix_alpha=cfg.data.cutmix_alpha,
        )


def build_mixing(settings: StepSettings, num_classes: int) -> nn.Module | None:
    """torchvision's batch MixUp and/or CutMix (one at random per batch when both are on)."""
    from torchvision.transforms import v2

    mixers: list[nn.Module] = []
    if settings.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=settings.mixup_alpha, num_classes=num_classes))
    if settings.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=settings.cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


class Stepper:
    """Forward and backward on each batch; an optimizer step every `accumulate_steps` batches."""

    def __init__(
        self,
        model: nn.Module,
        raw_model: nn.Module,
        settings: StepSettings,
        *,
        precision: Precision,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        num_classes: int,
        channels_last: bool,
    ) -> None:
        self.model, self.raw_model = model, raw_model
        self.precision, self.optimizer, self.schedule = precision, optimizer, schedule
        self.scaler = precision.grad_scaler()
        weight = None
        if settings.class_weights is not None:
            output_device = getattr(raw_model, "output_device", None)
            output_device = output_device or next(raw_model.parameters()).device
            weight = torch.tensor(settings.class_weights, device=output_device)
        self.criterion = nn.CrossEntropyLoss(
            weight=weight, label_smoothing=settings.label_smoothing
        )
        self.accumulate = settings.accumulate_steps
        self.clip = settings.grad_clip_norm
        self.channels_last = channels_last
        self.mixing = build_mixing(settings, num_classes)
        self.ema: AveragedModel | None = None
        if settings.ema_decay:
            self.ema = AveragedModel(
                raw_model,
                multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay),
                use_buffers=True,
            )
        self.micro_batches = 0
        self.track_grad_norms = False
        self.grad_norms: torch.Tensor | None = None

    def train_batch(
        self, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Learn from one batch; return (logits, loss, whether the optimizer stepped)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        soft_targets = targets
        if self.mixing is not None:
            images, soft_targets = self.mixing(images, targets)
        self.micro_batches += 1
        stepping = self.micro_batches % self.accumulate == 0
        no_sync = getattr(self.model, "no_sync", None)
        context = no_sync() if no_sync is not None and not stepping else contextlib.nullcontext()
        with context:
            with self.precision.autocast():
                logits = self.model(images)
                loss = self.criterion(logits, soft_targets.to(logits.device, non_blocking=True))
            self.scaler.scale(loss / self.accumulate if self.accumulate > 1 else loss).backward()
        if stepping:
            self._step()
        return logits, loss, stepping

    def _step(self) -> None:
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.clip)
        if self.track_grad_norms:
            grads = [p.grad for p in self.raw_model.parameters() if p.grad is not None]
            self.grad_norms = torch.stack([grad.detach().float().norm() for grad in grads])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step_iteration()
        if self.ema is not None:
            self.ema.update_parameters(self.raw_model)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs besides the model: optimizer, schedule, scaler, EMA."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else {},
            "ema_updates": int(self.ema.n_averaged.item()) if self.ema is not None else 0,
        }

    def load_state_dict(self, saved: dict[str, Any], *, same_schedule: bool = True) -> None:
        """Restore what `state_dict` saved.

        When the run's length changed (more epochs), the schedule is rebuilt for the new length
        and advanced to the saved step instead of restored.
        """
        if same_schedule:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.schedule.load_state_dict(saved["scheduler"])
        else:
            # Advance the new schedule on the fresh optimizer (schedules compound the current LR),
            # then take the saved optimizer state but keep the new schedule's hyperparameters.
            with (
                warnings.catch_warnings()
            ):  # stepping a schedule without optimizer steps is the point
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(saved["step"]):
                    self.schedule.step_iteration()
                epochs_done = saved["epoch"] + (1 if saved["epoch_done"] else 0)
                if not isinstance(self.schedule.scheduler, lr_scheduler.ReduceLROnPlateau):
                    for _ in range(epochs_done):
                        self.schedule.step_epoch()
            settings = [
                {key: value for key, value in group.items() if key != "params"}
                for group in self.optimizer.param_groups
            ]
            self.optimizer.load_state_dict(saved["optimizer"])
            for group, setting in zip(self.optimizer.param_groups, settings, strict=True):
                group.update(setting)
        if saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None and saved["ema"]:
            self.ema.module.load_state_dict(saved["ema"])
            self.ema.n_averaged.fill_(saved["ema_updates"])
