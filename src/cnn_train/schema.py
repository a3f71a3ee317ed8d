"""The config schema: every key's type and default value, registered in Hydra's ConfigStore.

This module is the one home of every default. A YAML file under `configs/<group>/` extends its
option's schema here and names only the values that option changes (see each file's header);
`cnn-train --cfg job` shows the composed result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MONITORS = ("val/acc1", "val/acc5", "val/loss", "val_ema/acc1", "val_ema/loss")
WEIGHTS = ("auto", "model", "ema")
TTA = ("none", "flip", "ten_crop")
EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; a larger head is a typo, not a dataset
MAX_IMAGE_SIZE = 4096
MAX_EPOCHS = 1_000_000


def bounded(default: Any, **bounds: Any) -> Any:
    """A field with its default and its bounds, which `config_checks.check_fields` applies.

    Bounds: `gt`, `ge`, `lt`, `le` (numbers; for a list, each of its items), `choices`, a
    list's `length`, and `off`: the value that turns a feature off, accepted besides the range.
    A subclass that only changes the default keeps its base's bounds. (It is a `field()`: ruff's
    RUF009 cannot tell, hence its `noqa` on list fields.)
    """
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=bounds)
    return field(default=default, metadata=bounds)


@dataclass
class ModelConfig:
    name: str = MISSING
    num_classes: int | None = bounded(None, ge=2, le=MAX_CLASSES)  # null: the dataset's count
    variant: str = "auto"  # auto | imagenet | small (auto: small for images of 32 px and below)
    weights: str | None = None  # a local file: a cnn-train checkpoint or a torchvision state_dict
    freeze_features: bool = False  # train the classifier only (with model.weights)


@dataclass
class DropoutModelConfig(ModelConfig):
    dropout: float = bounded(0.5, ge=0, lt=1)  # before each hidden fully connected layer


@dataclass
class DataConfig:
    name: str = MISSING
    root: str | None = None
    batch_size: int = bounded(64, ge=1, le=2**20)  # per process
    eval_batch_size: int | None = bounded(None, ge=1, le=2**20)  # null: data.batch_size
    num_workers: int = bounded(0, ge=0, le=256)  # decoding processes for file datasets
    # null: native, or the smallest size the model takes
    image_size: int | None = bounded(None, ge=1, le=MAX_IMAGE_SIZE)
    augment: str = "none"  # a preset of data/transforms.py (PRESETS)
    split: str = "val"  # the split cnn-eval reads: val, or test where the dataset has one
    # shuffle | balanced (with replacement, each class equally likely)
    sampler: str = bounded("shuffle", choices=("shuffle", "balanced"))
    # Beta(alpha, alpha) mixing (0: off); below 1e-6 the float32 sampler rounds alpha to 0
    mixup_alpha: float = bounded(0.0, ge=1e-6, off=0.0)
    cutmix_alpha: float = bounded(0.0, ge=1e-6, off=0.0)
    # auto | true | false: one uint8 tensor on the device, batch-augmented (a bare `true` on
    # the command line arrives as the string "True")
    in_memory: str = bounded("auto", choices=("auto", "true", "false", "True", "False"))
    # stop when more than this share of files cannot be read
    max_bad_fraction: float = bounded(0.01, ge=0, lt=1)
    # Folder datasets: decoded once and held in memory when their images at the working size
    # fit in this many MB (0: always stream from the files).
    decode_budget_mb: float = bounded(2048.0, ge=0)


@dataclass
class DigitsConfig(DataConfig):
    batch_size: int = 32
    val_fraction: float = bounded(0.2, gt=0, lt=1)


@dataclass
class VisionDataConfig(DataConfig):
    root: str | None = "data"
    download: bool = False  # true: fetch the files into data.root
    batch_size: int = 128
    val_fraction: float = bounded(0.1, gt=0, lt=1)


@dataclass
class FolderDataConfig(DataConfig):
    num_workers: int = 2
    augment: str = "imagenet"
    val_fraction: float = bounded(0.1, gt=0, lt=1)  # held out when there is no val/ folder
    # keep only the first N training images of each class
    max_per_class: int | None = bounded(None, ge=1)


@dataclass
class SyntheticConfig(DataConfig):
    batch_size: int = 32
    num_classes: int = bounded(10, ge=2, le=MAX_CLASSES)
    native_size: int = bounded(32, ge=1, le=MAX_IMAGE_SIZE)
    channels: int = bounded(3, choices=(1, 3))
    train_samples: int = bounded(512, ge=1)
    val_samples: int = bounded(128, ge=1)
    noise: float = bounded(0.5, ge=0)  # the jitter's standard deviation, a share of 255


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = bounded(1e-3, gt=0)
    weight_decay: float = bounded(0.0, ge=0, le=1)  # above 1, lr x decay flips weights at lr 1
    decay_norm_and_bias: bool = False  # false: no weight decay on norm weights and biases


@dataclass
class SGDConfig(OptimizerConfig):
    lr: float = 0.02
    momentum: float = bounded(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = 5e-4


@dataclass
class AdamConfig(OptimizerConfig):
    betas: list[float] = bounded([0.9, 0.999], ge=0, lt=1, length=2)  # noqa: RUF009 (a field())
    eps: float = bounded(1e-8, ge=1e-30)  # smaller rounds to 0 in float32: 0/0 on a zero grad


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = 0.05


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = bounded(0.99, ge=0, lt=1)
    eps: float = bounded(1e-8, ge=1e-30)  # as AdamConfig.eps
    momentum: float = bounded(0.0, ge=0, lt=1)


@dataclass
class SchedulerConfig:
    name: str = MISSING
    # linear warmup from warmup_start_factor * lr, per iteration
    warmup_epochs: float = bounded(0.0, ge=0, le=MAX_EPOCHS)
    warmup_start_factor: float = bounded(0.01, gt=0, le=1)


@dataclass
class StepLRConfig(SchedulerConfig):
    step_size: int = bounded(30, ge=1)  # epochs
    gamma: float = bounded(0.1, gt=0, le=1)  # a decay


@dataclass
class MultiStepConfig(SchedulerConfig):
    # epochs, increasing
    milestones: list[int] = bounded([30, 60], ge=1)  # noqa: RUF009 (a field())
    gamma: float = bounded(0.1, gt=0, le=1)  # a decay


@dataclass
class PlateauConfig(SchedulerConfig):
    factor: float = bounded(0.1, gt=0, lt=1)
    patience: int = bounded(5, ge=0)  # epochs without improvement of the monitored metric
    threshold: float = bounded(1e-4, ge=0)  # relative improvement that counts as progress
    min_lr: float = bounded(0.0, ge=0)


@dataclass
class CosineConfig(SchedulerConfig):
    min_lr: float = bounded(0.0, ge=0)


@dataclass
class OneCycleConfig(SchedulerConfig):
    pct_start: float = bounded(0.25, gt=0, lt=1)  # share of the run warming up to optimizer.lr
    div_factor: float = bounded(25.0, ge=1)  # the start LR is optimizer.lr / div_factor
    # the last LR is the start LR / final_div_factor
    final_div_factor: float = bounded(1e4, ge=1)


@dataclass
class DeviceConfig:
    name: str = MISSING


@dataclass
class DDPConfig(DeviceConfig):
    # null: every visible GPU (two CPU processes without one)
    num_procs: int | None = bounded(None, ge=1, le=1024)
    # auto (nccl on GPUs, gloo on the CPU) | nccl | gloo
    backend: str = bounded("auto", choices=("auto", "nccl", "gloo"))
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm (GPUs only)


@dataclass
class SplitDeviceConfig(DeviceConfig):
    devices: list[str] = field(default_factory=lambda: ["cuda:0", "cuda:1"])  # tower 0, tower 1


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


SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"base": ModelConfig, "dropout": DropoutModelConfig},
    "data": {
        "base": DataConfig,
        "digits": DigitsConfig,
        "synthetic": SyntheticConfig,
        "vision": VisionDataConfig,
        "folder": FolderDataConfig,
    },
    "optimizer": {
        "base": OptimizerConfig,
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
    "device": {"base": DeviceConfig, "ddp": DDPConfig, "split": SplitDeviceConfig},
}


def register_configs() -> None:
    """Put every schema into Hydra's ConfigStore as `schema/<group>/<name>`."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="lr_find_schema", node=LrFindConfig)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
