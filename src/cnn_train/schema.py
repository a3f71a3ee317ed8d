"""Typed config schemas for Hydra's ConfigStore, and the value checks types cannot express."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from cnn_train.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
VARIANTS = ("auto", "imagenet", "small")
DEVICES = ("auto", "cpu", "cuda", "ddp", "mps", "alexnet_split")
BACKENDS = ("auto", "nccl", "gloo")


@dataclass
class ModelConfig:
    name: str = MISSING
    num_classes: int | None = None
    variant: str = "auto"
    dropout: float = 0.5
    weights: str | None = None
    freeze_features: bool = False


@dataclass
class DataConfig:
    name: str = MISSING
    root: str | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    image_size: int | None = None
    augment: str = "none"
    split: str = "val"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    in_memory: str = "auto"
    max_bad_fraction: float = 0.01


@dataclass
class DigitsConfig(DataConfig):
    val_fraction: float = 0.2


@dataclass
class VisionDataConfig(DataConfig):
    root: str | None = "data"
    download: bool = False
    val_fraction: float = 0.1


@dataclass
class FolderDataConfig(DataConfig):
    val_fraction: float = 0.1
    max_per_class: int | None = None


@dataclass
class SyntheticConfig(DataConfig):
    num_classes: int = 10
    native_size: int = 32
    channels: int = 3
    train_samples: int = 512
    val_samples: int = 128
    noise: float = 0.5


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 0.1
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = False


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class AdamWConfig(OptimizerConfig):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class AdamConfig(AdamWConfig):
    pass


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0


@dataclass
class SchedulerConfig:
    name: str = MISSING
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.01


@dataclass
class StepLRConfig(SchedulerConfig):
    step_size: int = 30
    gamma: float = 0.1


@dataclass
class MultiStepConfig(SchedulerConfig):
    milestones: list[int] = field(default_factory=lambda: [30, 60])
    gamma: float = 0.1


@dataclass
class PlateauConfig(SchedulerConfig):
    factor: float = 0.1
    patience: int = 5
    threshold: float = 1e-4
    min_lr: float = 0.0


@dataclass
class CosineConfig(SchedulerConfig):
    min_lr: float = 0.0


@dataclass
class OneCycleConfig(SchedulerConfig):
    pct_start: float = 0.25
    div_factor: float = 25.0
    final_div_factor: float = 1e4


@dataclass
class DeviceConfig:
    name: str = "auto"
    num_procs: int | None = None
    backend: str = "auto"
    sync_bn: bool = False
    devices: list[str] = field(default_factory=list)


@dataclass
class TrainerConfig:
    epochs: int = 10
    max_steps: int | None = None
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    precision: str = "auto"
    log_every_steps: int = 25
    checkpoint_every_steps: int | None = None
    deterministic: bool = False
    channels_last: bool | None = None
    compile: bool = False
    label_smoothing: float = 0.0
    grad_clip_norm: float | None = None
    accumulate_steps: int = 1
    ema_decay: float | None = None


@dataclass
class TrackingConfig:
    histogram_every: int = 0
    image_grid: bool = True
    graph: bool = True


@dataclass
class TrainConfig:
    model: Any = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    device: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    resume: str | None = None


@dataclass
class EvalConfig:
    checkpoint: str = MISSING
    data: Any = field(default_factory=dict)
    device: Any = MISSING
    precision: str = "auto"
    limit_batches: int | None = None


def register_configs() -> None:
    """Put every schema into Hydra's ConfigStore (group files extend them via their defaults)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    schemas: dict[str, dict[str, type]] = {
        "model": {"base": ModelConfig},
        "data": {
            "base": DataConfig,
            "digits": DigitsConfig,
            "synthetic": SyntheticConfig,
            "vision": VisionDataConfig,
            "folder": FolderDataConfig,
        },
        "optimizer": {
            "sgd": SGDConfig,
            "adam": AdamConfig,
            "adamw": AdamWConfig,
            "rmsprop": RMSpropConfig,
        },
        "scheduler": {
            "base": SchedulerConfig,
            "step": StepLRConfig,
            "multistep": MultiStepConfig,
            "plateau": PlateauConfig,
            "cosine": CosineConfig,
            "onecycle": OneCycleConfig,
        },
        "device": {"base": DeviceConfig},
    }
    for group, nodes in schemas.items():
        for name, node in nodes.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _positive(value: float | int | None, key: str) -> None:
    _require(value is None or value > 0, f"{key} must be > 0, got {value}")


def _one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    _require(value in allowed, f"{key}={value} is not one of {', '.join(allowed)}")


def _reject_targets(node: Any, path: str = "") -> None:
    """Components are chosen by name from this package's registries, never by a `_target_`."""
    if isinstance(node, DictConfig):
        for key in node:
            where = f"{path}.{key}" if path else str(key)
            _require(
                key != "_target_",
                f"{where} is not accepted: pick components by name (model=..., optimizer=...)",
            )
            _reject_targets(node._get_node(key), where)


def validate_train(cfg: DictConfig) -> None:
    """Check the values that types cannot (ranges, names); raise UserError naming the key."""
    _reject_targets(cfg)
    _positive(cfg.trainer.epochs, "trainer.epochs")
    _positive(cfg.trainer.max_steps, "trainer.max_steps")
    _positive(cfg.trainer.limit_train_batches, "trainer.limit_train_batches")
    _positive(cfg.trainer.limit_val_batches, "trainer.limit_val_batches")
    _positive(cfg.trainer.log_every_steps, "trainer.log_every_steps")
    _positive(cfg.trainer.checkpoint_every_steps, "trainer.checkpoint_every_steps")
    _positive(cfg.trainer.accumulate_steps, "trainer.accumulate_steps")
    _positive(cfg.trainer.grad_clip_norm, "trainer.grad_clip_norm")
    _require(
        0 <= cfg.trainer.label_smoothing < 1,
        f"trainer.label_smoothing must be in [0, 1), got {cfg.trainer.label_smoothing}",
    )
    _require(
        cfg.trainer.ema_decay is None or 0 < cfg.trainer.ema_decay < 1,
        f"trainer.ema_decay must be in (0, 1), got {cfg.trainer.ema_decay}",
    )
    _require(
        cfg.tracking.histogram_every >= 0,
        f"tracking.histogram_every must be >= 0, got {cfg.tracking.histogram_every}",
    )
    _one_of(cfg.trainer.precision, PRECISIONS, "trainer.precision")
    _positive(cfg.optimizer.lr, "optimizer.lr")
    _require(
        cfg.optimizer.weight_decay >= 0,
        f"optimizer.weight_decay must be >= 0, got {cfg.optimizer.weight_decay}",
    )
    _positive(cfg.model.num_classes, "model.num_classes")
    _one_of(cfg.model.variant, VARIANTS, "model.variant")
    _require(
        0 <= cfg.model.dropout < 1, f"model.dropout must be in [0, 1), got {cfg.model.dropout}"
    )
    validate_data(cfg.data)
    _one_of(cfg.device.name, DEVICES, "device.name")
    _one_of(cfg.device.backend, BACKENDS, "device.backend")
    _positive(cfg.device.num_procs, "device.num_procs")


def validate_data(data: DictConfig) -> None:
    """Check a data config's sizes and counts."""
    _positive(data.batch_size, "data.batch_size")
    _positive(data.eval_batch_size, "data.eval_batch_size")
    _positive(data.image_size, "data.image_size")
    _positive(data.get("max_per_class"), "data.max_per_class")
    _require(data.num_workers >= 0, f"data.num_workers must be >= 0, got {data.num_workers}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        _require(data[key] >= 0, f"data.{key} must be >= 0, got {data[key]}")
    _require(
        0 <= data.max_bad_fraction < 1,
        f"data.max_bad_fraction must be in [0, 1), got {data.max_bad_fraction}",
    )
    if "val_fraction" in data:
        _require(
            0 < data.val_fraction < 1,
            f"data.val_fraction must be in (0, 1), got {data.val_fraction}",
        )
