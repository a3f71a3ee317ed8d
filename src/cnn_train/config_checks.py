"""Config checks that types cannot express: ranges, finiteness, names and unknown keys."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cnn_train.engine.precision import PRECISIONS
from cnn_train.errors import UserError
from cnn_train.models import MODELS
from cnn_train.schema import TrackingConfig, TrainConfig, TrainerConfig

BACKENDS = ("auto", "nccl", "gloo")
MAX_IMAGE_SIZE = 4096


def require(ok: bool, message: str) -> None:
    """Raise a UserError with `message` unless `ok`."""
    if not ok:
        raise UserError(message)


def _positive(value: float | int | None, key: str) -> None:
    require(value is None or value > 0, f"{key} must be > 0, got {value}")


def _one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    require(value in allowed, f"{key}={value} is not one of {', '.join(allowed)}")


def _in_range(value: float, low: float, high: float, key: str, *, high_open: bool = True) -> None:
    inside = low <= value < high if high_open else low <= value <= high
    bracket = ")" if high_open else "]"
    require(inside, f"{key} must be in [{low}, {high}{bracket}, got {value}")


def _finite_numbers(node: Any, path: str) -> None:
    """Every float in the config is a number: `nan` and `inf` are refused wherever they appear."""
    if isinstance(node, (DictConfig, ListConfig)):
        items = node.items() if isinstance(node, DictConfig) else enumerate(node)
        for key, value in items:
            _finite_numbers(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, float):
        require(math.isfinite(node), f"{path} must be a finite number, got {node}")


def _reject_targets(node: Any, path: str = "") -> None:
    """Components are chosen by name from this package's registries, never by a `_target_`."""
    if isinstance(node, DictConfig):
        for key in node:
            where = f"{path}.{key}" if path else str(key)
            require(
                key != "_target_",
                f"{where} is not accepted: pick components by name (model=..., optimizer=...)",
            )
            _reject_targets(node._get_node(key), where)


def _known_keys(node: DictConfig, schema: type, path: str) -> None:
    """A key added with `+` that the schema does not have is a typo, not a setting."""
    known = {item.name for item in dataclasses.fields(schema)}
    for key in node:
        where = f"{path}.{key}" if path else str(key)
        require(key in known, f"unknown key {where}; valid keys: {', '.join(sorted(known))}")


def check_train_config(cfg: DictConfig) -> None:
    """Check the values that types cannot (ranges, names); raise UserError naming the key."""
    _reject_targets(cfg)
    _finite_numbers(cfg, "")
    _known_keys(cfg, TrainConfig, "")
    _known_keys(cfg.trainer, TrainerConfig, "trainer")
    _known_keys(cfg.tracking, TrackingConfig, "tracking")
    for group in ("model", "data", "optimizer", "scheduler", "device"):
        schema = OmegaConf.get_type(cfg[group])
        if schema is not None and dataclasses.is_dataclass(schema):
            _known_keys(cfg[group], schema, group)
    check_trainer_config(cfg.trainer)
    require(
        cfg.tracking.histogram_every >= 0,
        f"tracking.histogram_every must be >= 0, got {cfg.tracking.histogram_every}",
    )
    check_model_config(cfg.model)
    check_data_config(cfg.data)
    check_optimizer_config(cfg.optimizer)
    check_scheduler_config(cfg.scheduler)
    check_device_config(cfg.device)


def check_trainer_config(trainer: DictConfig) -> None:
    """The loop's counts, precision and regularisers."""
    for key in (
        "epochs",
        "max_steps",
        "limit_train_batches",
        "limit_val_batches",
        "log_every_steps",
        "checkpoint_every_steps",
        "accumulate_steps",
        "grad_clip_norm",
    ):
        _positive(trainer[key], f"trainer.{key}")
    _in_range(trainer.label_smoothing, 0, 1, "trainer.label_smoothing")
    require(
        trainer.ema_decay is None or 0 < trainer.ema_decay < 1,
        f"trainer.ema_decay must be in (0, 1), got {trainer.ema_decay}",
    )
    _one_of(trainer.precision, PRECISIONS, "trainer.precision")


def check_model_config(model: DictConfig) -> None:
    """Class count, variant and dropout."""
    _positive(model.num_classes, "model.num_classes")
    spec = MODELS.get(model.name)  # an unknown name is reported where the model is built
    if spec is not None:
        _one_of(model.variant, ("auto", *spec.min_size), "model.variant")
    if "dropout" in model:
        _in_range(model.dropout, 0, 1, "model.dropout")


def check_data_config(data: DictConfig) -> None:
    """A data config's sizes, counts and fractions."""
    _positive(data.batch_size, "data.batch_size")
    _positive(data.eval_batch_size, "data.eval_batch_size")
    _positive(data.image_size, "data.image_size")
    require(
        data.image_size is None or data.image_size <= MAX_IMAGE_SIZE,
        f"data.image_size={data.image_size} is larger than {MAX_IMAGE_SIZE} px; "
        "use a smaller data.image_size",
    )
    _positive(data.get("max_per_class"), "data.max_per_class")
    require(data.num_workers >= 0, f"data.num_workers must be >= 0, got {data.num_workers}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        require(data[key] >= 0, f"data.{key} must be >= 0, got {data[key]}")
    _in_range(data.max_bad_fraction, 0, 1, "data.max_bad_fraction")
    require(
        data.decode_budget_mb >= 0,
        f"data.decode_budget_mb must be >= 0 (0: always stream), got {data.decode_budget_mb}",
    )
    if "val_fraction" in data:
        require(
            0 < data.val_fraction < 1,
            f"data.val_fraction must be in (0, 1), got {data.val_fraction}",
        )


def check_optimizer_config(optimizer: DictConfig) -> None:
    """Learning rate, decay, momentum, betas and eps of whichever optimizer is chosen."""
    _positive(optimizer.lr, "optimizer.lr")
    require(
        optimizer.weight_decay >= 0,
        f"optimizer.weight_decay must be >= 0, got {optimizer.weight_decay}",
    )
    if "momentum" in optimizer:
        _in_range(optimizer.momentum, 0, 1, "optimizer.momentum")
    if "alpha" in optimizer:
        _in_range(optimizer.alpha, 0, 1, "optimizer.alpha")
    if "eps" in optimizer:
        _positive(optimizer.eps, "optimizer.eps")
    if "betas" in optimizer:
        betas = list(optimizer.betas)
        require(
            len(betas) == 2 and all(0 <= beta < 1 for beta in betas),
            f"optimizer.betas must be two numbers in [0, 1), got {betas}",
        )


def check_scheduler_config(scheduler: DictConfig) -> None:
    """Warmup and the chosen schedule's own settings."""
    require(
        scheduler.warmup_epochs >= 0,
        f"scheduler.warmup_epochs must be >= 0, got {scheduler.warmup_epochs}",
    )
    require(
        0 < scheduler.warmup_start_factor <= 1,
        f"scheduler.warmup_start_factor must be in (0, 1], got {scheduler.warmup_start_factor}",
    )
    for key in ("step_size", "gamma", "div_factor", "final_div_factor"):
        if key in scheduler:
            _positive(scheduler[key], f"scheduler.{key}")
    if "factor" in scheduler:
        _in_range(scheduler.factor, 0, 1, "scheduler.factor")
    if "patience" in scheduler:
        require(
            scheduler.patience >= 0, f"scheduler.patience must be >= 0, got {scheduler.patience}"
        )
    if "pct_start" in scheduler:
        require(
            0 < scheduler.pct_start < 1,
            f"scheduler.pct_start must be in (0, 1), got {scheduler.pct_start}",
        )
    if "milestones" in scheduler:
        milestones = list(scheduler.milestones)
        require(
            all(m > 0 for m in milestones) and milestones == sorted(milestones),
            f"scheduler.milestones must be increasing positive epochs, got {milestones}",
        )


def check_device_config(device: DictConfig) -> None:
    """The device's name, and the data-parallel settings where the option has them."""
    from cnn_train.distributed import DEVICES

    _one_of(device.name, tuple(DEVICES), "device.name")
    if "backend" in device:
        _one_of(device.backend, BACKENDS, "device.backend")
    if "num_procs" in device:
        _positive(device.num_procs, "device.num_procs")
