"""The run's own keys (trainer, tracking, seed, resume) and the inference tools' schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from cnn_train.schema.fields import (
    EXPORT_FORMATS,
    MAX_CLASSES,
    MAX_EPOCHS,
    MONITORS,
    PRECISIONS,
    TTA,
    WEIGHTS,
    bounded,
)


@dataclass
class TrainerConfig:
    epochs: int = bounded(8, ge=1, le=MAX_EPOCHS)
    max_steps: int | None = bounded(None, ge=1)  # stop after this many optimizer steps
    # Batches per epoch (quick runs): an int is a count, a float in (0, 1) a share of them.
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    precision: str = bounded("auto", choices=PRECISIONS)
    log_every_steps: int = bounded(25, ge=1)
    # also save last.pt every N steps, mid-epoch
    checkpoint_every_steps: int | None = bounded(None, ge=1)
    deterministic: bool = False  # deterministic CUDA kernels (CPU runs are always repeatable)
    channels_last: bool | None = None  # null: where it is faster (engine/precision.py)
    compile: bool = False  # torch.compile the model
    label_smoothing: float = bounded(0.0, ge=0, lt=1)
    grad_clip_norm: float | None = bounded(None, gt=0)
    accumulate_steps: int = bounded(1, ge=1)  # an optimizer step every N batches
    # e.g. 0.999: keep and evaluate an exponential moving average
    ema_decay: float | None = bounded(None, gt=0, lt=1)
    # What picks best.pt, drives the plateau schedule and early stopping: val/acc1, val/acc5,
    # val/loss, val_ema/acc1, val_ema/loss (losses are minimised, accuracies maximised).
    monitor: str = bounded("val/acc1", choices=MONITORS)
    # epochs without improvement before stopping
    early_stopping_patience: int | None = bounded(None, ge=1)
    early_stopping_min_delta: float = bounded(0.0, ge=0)  # an improvement must be larger
    save_top_k: int = bounded(1, ge=1)  # keep the K best epochs as checkpoints/best-e<EPOCH>.pt
    # also keep checkpoints/epoch-<EPOCH>.pt every N epochs
    save_every_epochs: int | None = bounded(None, ge=1)
    class_weights: Any = None  # null | balanced (inverse class frequency) | a list, one per class
    # train and validate on the same N fixed batches
    overfit_batches: int | None = bounded(None, ge=1)
    detect_anomaly: bool = False  # autograd's anomaly detection (slow: for debugging)
    # [A, B]: torch.profiler over steps A..B (1-based, A <= B)
    profile_steps: list[int] | None = bounded(None, ge=1, length=2)  # noqa: RUF009 (a field())


@dataclass
class TrackingConfig:
    # weight and gradient histograms every N epochs (0: off)
    histogram_every: int = bounded(0, ge=0)
    image_grid: bool = True  # a grid of augmented training images at the start
    graph: bool = True  # the model graph at the start


@dataclass
class TrainConfig:
    model: Any = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    device: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = bounded(0, ge=0, lt=2**32)  # NumPy's range; rank r seeds with seed + r
    resume: str | None = (
        None  # null | auto (this run folder's last.pt) | a checkpoint or run folder
    )


@dataclass
class EvalDataConfig:
    split: str | None = None  # null: the checkpoint's own value (val)
    root: str | None = None
    eval_batch_size: int | None = bounded(None, ge=1, le=2**20)


@dataclass
class EvalConfig:
    checkpoint: str = MISSING
    data: Any = field(default_factory=EvalDataConfig)
    device: Any = MISSING
    precision: str = bounded("auto", choices=PRECISIONS)  # auto: the run's own precision
    limit_batches: int | None = bounded(None, ge=1)
    # auto (those the run's monitor chose) | model | ema
    weights: str = bounded("auto", choices=WEIGHTS)
    # none | flip | ten_crop: softmax averaged over the views
    tta: str = bounded("none", choices=TTA)


@dataclass
class PredictConfig:
    checkpoint: str = MISSING
    images: Any = MISSING  # a list of image files, or a folder
    topk: int = bounded(5, ge=1, le=MAX_CLASSES)
    weights: str = bounded("auto", choices=WEIGHTS)  # as EvalConfig.weights
    tta: str = bounded("none", choices=TTA)  # as EvalConfig.tta


@dataclass
class ExportConfig:
    checkpoint: str = MISSING
    format: str = bounded(MISSING, choices=EXPORT_FORMATS)
    output: str | None = (
        None  # null: next to the checkpoint, best.onnx / best.ts / best.safetensors
    )
    # largest accepted logit difference, relative to the largest logit
    tolerance: float = bounded(1e-4, ge=0)
    weights: str = bounded("auto", choices=WEIGHTS)  # as EvalConfig.weights
    overwrite: bool = False  # replace an existing output= file (never a checkpoint)


@dataclass
class LrFindConfig(TrainConfig):
    start_lr: float = bounded(1e-6, gt=0)  # the LR range test's first LR
    end_lr: float = bounded(1.0, gt=0)  # and its last (raised exponentially over `steps`)
    # training steps of the test (it stops early once the loss diverges)
    steps: int = bounded(100, ge=2, le=1_000_000)
