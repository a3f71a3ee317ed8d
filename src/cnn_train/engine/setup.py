"""A training run's parts (`engine.state.RunParts`), built once from the composed config."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnn_train.build import ModelAndData, build_model_and_data, split_loader
from cnn_train.config_checks import check_train_config
from cnn_train.data.loaders import Loader
from cnn_train.distributed import DistContext, place_model, wrap_model
from cnn_train.engine.monitor import Monitor
from cnn_train.engine.precision import resolve_precision, use_channels_last
from cnn_train.engine.state import RunParts
from cnn_train.engine.stepper import Stepper, StepSettings
from cnn_train.errors import UserError
from cnn_train.models import get_spec
from cnn_train.models.weights import freeze_features, load_weights
from cnn_train.optim import build_optimizer, build_schedule

log = logging.getLogger(__name__)


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
    if device.type == "cuda":
        spec = get_spec(cfg.model.name)
        refusal = spec.deterministic_refusal(built.model, built.variant, built.image_size)
        if refusal is not None:
            raise UserError(refusal)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def scale_lr_to_batch(cfg: DictConfig, world_size: int) -> DictConfig:
    """`optimizer.lr_base_batch` applied: a copy of `cfg` whose `optimizer.lr` is scaled
    linearly from that batch to this run's global batch (processes x `data.batch_size` x
    `trainer.accumulate_steps`), and `lr_base_batch` null, so that the checkpoint records the
    LR the run used and a resume or an evaluation never scales it twice; else `cfg` itself."""
    base_batch = cfg.optimizer.lr_base_batch
    if base_batch is None:
        return cfg
    global_batch = world_size * cfg.data.batch_size * cfg.trainer.accumulate_steps
    scaled = copy.deepcopy(cfg)
    scaled.optimizer.lr = cfg.optimizer.lr * global_batch / base_batch
    scaled.optimizer.lr_base_batch = None
    log.info(
        f"optimizer.lr {cfg.optimizer.lr:g} for batch {base_batch} -> {scaled.optimizer.lr:g} "
        f"for this run's global batch {global_batch}"
    )
    return scaled


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
        freeze_features(built.model, cfg.model.name)
    spec = get_spec(cfg.model.name)
    channels_last = use_channels_last(cfg.trainer.channels_last, ctx.device, spec, built.image_size)
    model = place_model(built.model, cfg.device, ctx.device, spec=spec, channels_last=channels_last)
    return built, model, channels_last


def limited(batches: int, limit: int | float | None) -> int:
    """`trainer.limit_*_batches` applied: an int is a count, a float in (0, 1) a share."""
    if limit is None:
        return batches
    if isinstance(limit, float):
        return max(1, math.floor(batches * limit))
    return min(batches, limit)


def _count_steps(cfg: DictConfig, train_batches: int, train_images: int) -> tuple[int, int]:
    """Batches per epoch (whole accumulation groups) and optimizer steps of the whole run."""
    accumulate, batch = cfg.trainer.accumulate_steps, cfg.data.batch_size
    batches = limited(train_batches, cfg.trainer.overfit_batches or cfg.trainer.limit_train_batches)
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


def _loaders(
    cfg: DictConfig, built: ModelAndData, device: torch.device, ctx: DistContext
) -> tuple[Loader, Loader, int]:
    """The training and validation loaders, and how many validation batches an epoch reads.

    With `trainer.overfit_batches=N` both are the same N fixed training batches: in order, with
    no augmentation (the evaluation preprocessing).
    """
    shard = {"rank": ctx.rank, "world_size": ctx.world_size}
    batch_size = cfg.data.batch_size
    overfit = cfg.trainer.overfit_batches
    if overfit:
        fixed = split_loader(built, "train", batch_size, device, train=False, **shard)
        return fixed, fixed, min(len(fixed), overfit)
    train = split_loader(built, "train", batch_size, device, train=True, seed=cfg.seed, **shard)
    eval_batch = cfg.data.eval_batch_size or batch_size
    val = split_loader(built, "val", eval_batch, device, train=False, **shard)
    return train, val, limited(len(val), cfg.trainer.limit_val_batches)


def step_settings(cfg: DictConfig, built: ModelAndData) -> StepSettings:
    """The step's settings from the config, with the class weights resolved for the data;
    `trainer.overfit_batches` turns label smoothing, MixUp and CutMix off."""
    settings = StepSettings.from_config(cfg)
    weights = class_weights(cfg.trainer.class_weights, built)
    settings = dataclasses.replace(settings, class_weights=weights)
    if cfg.trainer.overfit_batches:
        settings = dataclasses.replace(
            settings, label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0
        )
    return settings


def class_weights(setting: Any, built: ModelAndData) -> tuple[float, ...] | None:
    """`trainer.class_weights`: null, `balanced` (N / (classes x count) from the training
    split's labels, so every class weighs the same in the loss) or one number per class."""
    if setting is None:
        return None
    if setting == "balanced":
        labels = built.dataset.splits["train"].labels
        counts = torch.bincount(labels, minlength=built.num_classes).clamp(min=1).double()
        return tuple((len(labels) / (built.num_classes * counts)).tolist())
    weights = tuple(float(weight) for weight in setting)
    if len(weights) != built.num_classes:
        raise UserError(
            f"trainer.class_weights lists {len(weights)} weights but the dataset has "
            f"{built.num_classes} classes; give one per class or use trainer.class_weights=balanced"
        )
    return weights


def build_parts(cfg: DictConfig, run_dir: Path, ctx: DistContext) -> RunParts:
    """Build every part of a run for this process (rank `ctx.rank` of a data-parallel job)."""
    check_train_config(cfg)
    cfg = scale_lr_to_batch(cfg, ctx.world_size)
    seed_everything(cfg.seed + ctx.rank)
    built, model, channels_last = _prepare_model(cfg, ctx)
    input_device = getattr(model, "input_device", ctx.device)
    precision = resolve_precision(cfg.trainer.precision, input_device)
    set_determinism(cfg, built, input_device)
    train_model = wrap_model(model, cfg.device, ctx)
    if cfg.trainer.compile:
        train_model = torch.compile(train_model)
    train_loader, val_loader, val_batches = _loaders(cfg, built, input_device, ctx)
    steps_per_epoch, total_steps = _count_steps(cfg, len(train_loader), train_loader.dataset_size)
    optimizer = build_optimizer(cfg.optimizer, model)
    schedule = build_schedule(
        cfg.scheduler,
        optimizer,
        total_steps,
        cfg.optimizer.lr,
        steps_per_epoch // cfg.trainer.accumulate_steps,
        mode=Monitor.named(cfg.trainer.monitor).mode,
    )
    stepper = Stepper(
        train_model,
        model,
        step_settings(cfg, built),
        precision=precision,
        optimizer=optimizer,
        schedule=schedule,
        num_classes=built.num_classes,
        channels_last=channels_last,
    )
    stepper.track_grad_norms = cfg.tracking.histogram_every > 0
    return RunParts(
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
        val_batches=val_batches,
        total_steps=total_steps,
        optimizer=optimizer,
        schedule=schedule,
        stepper=stepper,
    )
