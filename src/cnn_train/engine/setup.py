"""A training run's parts, built once from the composed config: model, data, optimization."""

from __future__ import annotations

import copy
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnn_train.build import ModelAndData, build_model_and_data, split_loader
from cnn_train.data import Loader
from cnn_train.distributed import DistContext, place_model, wrap_model
from cnn_train.engine.metrics import MetricSums
from cnn_train.engine.precision import Precision, resolve_precision, use_channels_last
from cnn_train.engine.stepper import Stepper, StepSettings
from cnn_train.errors import UserError
from cnn_train.models.weights import freeze_features, load_weights
from cnn_train.optim import Schedule, build_optimizer, build_schedule
from cnn_train.validation import validate_train

if TYPE_CHECKING:
    from cnn_train.tracking import RunTracker

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """Everything one process of a run trains with, and where it is in the run."""

    cfg: DictConfig
    ctx: DistContext
    run_dir: Path
    built: ModelAndData
    model: nn.Module  # the plain model: its state_dict is what checkpoints hold
    train_model: nn.Module  # what the step calls: the model, DDP-wrapped and/or compiled
    input_device: torch.device
    output_device: torch.device
    precision: Precision
    config: dict[str, Any]  # the resolved config that checkpoints record
    train_loader: Loader
    val_loader: Loader
    steps_per_epoch: int  # batches per epoch, a multiple of trainer.accumulate_steps
    val_batches: int
    total_steps: int  # optimizer steps of the whole run
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    stepper: Stepper
    tracker: RunTracker | None = None  # rank 0's TensorBoard writer and metrics file
    step: int = 0
    start_epoch: int = 0
    resume_batch: int = 0
    best_acc1: float = -1.0
    best_epoch: int = -1
    epoch_sums: MetricSums = field(init=False)

    def __post_init__(self) -> None:
        self.epoch_sums = self.new_sums()

    def new_sums(self) -> MetricSums:
        """Empty running sums of the training metrics, on the device the logits come out on."""
        return MetricSums(self.output_device, self.built.topk)

    @property
    def done(self) -> bool:
        """Whether the step budget (`trainer.max_steps`) is spent."""
        return bool(self.cfg.trainer.max_steps) and self.step >= self.cfg.trainer.max_steps


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_determinism(cfg: DictConfig, built: ModelAndData, device: torch.device) -> None:
    """Deterministic kernels when asked (and fail early where none exist); fast ones otherwise."""
    if not cfg.trainer.deterministic:
        torch.backends.cudnn.benchmark = device.type == "cuda"
        return
    pooled = getattr(built.model, "pooled_size", None)
    if device.type == "cuda" and pooled is not None:
        probe = copy.deepcopy(built.model.features).to("meta")
        side = built.image_size
        features = probe(torch.empty(1, 3, side, side, device="meta"))
        if tuple(features.shape[-2:]) != tuple(pooled):
            raise UserError(
                f"trainer.deterministic=true: {cfg.model.name} at {built.image_size} px needs "
                "adaptive average pooling, which has no deterministic CUDA backward; use "
                "data.image_size=224 or trainer.deterministic=false"
            )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def resolved_config(
    cfg: DictConfig, built: ModelAndData, precision: str, channels_last: bool
) -> dict[str, Any]:
    """The config as a plain dict with every `auto`/`null` that the run resolved filled in."""
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    config["model"].update(variant=built.variant, num_classes=built.num_classes)
    config["data"]["image_size"] = built.image_size
    config["trainer"].update(precision=precision, channels_last=channels_last)
    config["resume"] = None
    return config


def _prepare_model(cfg: DictConfig, ctx: DistContext) -> tuple[ModelAndData, nn.Module, bool]:
    """Build the model for the data, load and freeze weights, place it; say if channels_last."""
    built = build_model_and_data(cfg.model, cfg.data)
    if cfg.model.weights:
        load_weights(built.model, cfg.model.weights, cfg.model.name, built.variant)
    if cfg.model.freeze_features:
        freeze_features(built.model)
    channels_last = use_channels_last(
        cfg.trainer.channels_last, ctx.device, cfg.model.name, built.image_size
    )
    model = place_model(built.model, cfg.device, ctx.device, channels_last=channels_last)
    return built, model, channels_last


def _count_steps(cfg: DictConfig, train_batches: int, train_images: int) -> tuple[int, int]:
    """Batches per epoch (whole accumulation groups) and optimizer steps of the whole run."""
    accumulate, batch = cfg.trainer.accumulate_steps, cfg.data.batch_size
    batches = min(train_batches, cfg.trainer.limit_train_batches or math.inf)
    steps_per_epoch = batches - batches % accumulate
    if steps_per_epoch == 0:
        raise UserError(
            f"the training split has {train_images} images, too few for "
            f"data.batch_size={batch} per process x trainer.accumulate_steps={accumulate}; "
            "use a smaller data.batch_size"
        )
    total_steps = steps_per_epoch // accumulate * cfg.trainer.epochs
    if cfg.trainer.max_steps:
        total_steps = min(total_steps, cfg.trainer.max_steps)
    return steps_per_epoch, total_steps


def setup_run(cfg: DictConfig, run_dir: Path, ctx: DistContext) -> TrainingRun:
    """Build every part of a run for this process (rank `ctx.rank` of a data-parallel job)."""
    validate_train(cfg)
    seed_everything(cfg.seed + ctx.rank)
    built, model, channels_last = _prepare_model(cfg, ctx)
    input_device = getattr(model, "input_device", ctx.device)
    precision = resolve_precision(cfg.trainer.precision, input_device)
    set_determinism(cfg, built, input_device)
    train_model = wrap_model(model, cfg.device, ctx)
    if cfg.trainer.compile:
        train_model = torch.compile(train_model)
    shard = {"rank": ctx.rank, "world_size": ctx.world_size}
    eval_batch = cfg.data.eval_batch_size or cfg.data.batch_size
    train_loader = split_loader(
        built, "train", cfg.data.batch_size, input_device, train=True, seed=cfg.seed, **shard
    )
    val_loader = split_loader(built, "val", eval_batch, input_device, train=False, **shard)
    steps_per_epoch, total_steps = _count_steps(cfg, len(train_loader), train_loader.dataset_size)
    steps_per_update = steps_per_epoch // cfg.trainer.accumulate_steps
    optimizer = build_optimizer(cfg.optimizer, model)
    schedule = build_schedule(
        cfg.scheduler, optimizer, total_steps, cfg.optimizer.lr, steps_per_update
    )
    stepper = Stepper(
        train_model,
        model,
        StepSettings.from_config(cfg),
        precision=precision,
        optimizer=optimizer,
        schedule=schedule,
        num_classes=built.num_classes,
        channels_last=channels_last,
    )
    stepper.track_grad_norms = cfg.tracking.histogram_every > 0
    return TrainingRun(
        cfg=cfg,
        ctx=ctx,
        run_dir=run_dir,
        built=built,
        model=model,
        train_model=train_model,
        input_device=input_device,
        output_device=getattr(model, "output_device", input_device),
        precision=precision,
        config=resolved_config(cfg, built, precision.name, channels_last),
        train_loader=train_loader,
        val_loader=val_loader,
        steps_per_epoch=steps_per_epoch,
        val_batches=min(len(val_loader), cfg.trainer.limit_val_batches or math.inf),
        total_steps=total_steps,
        optimizer=optimizer,
        schedule=schedule,
        stepper=stepper,
    )
