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


@dataclass
class ModelConfig:
    name: str = MISSING
    num_classes: int | None = None  # null: the dataset's class count
    variant: str = "auto"  # auto | imagenet | small (auto: small for images of 32 px and below)
    weights: str | None = None  # a local file: a cnn-train checkpoint or a torchvision state_dict
    freeze_features: bool = False  # train the classifier only (with model.weights)


@dataclass
class DropoutModelConfig(ModelConfig):
    dropout: float = 0.5  # before each hidden fully connected layer


@dataclass
class DataConfig:
    name: str = MISSING
    root: str | None = None
    batch_size: int = 64  # per process
    eval_batch_size: int | None = None  # null: data.batch_size
    num_workers: int = 0  # decoding processes for file datasets
    image_size: int | None = None  # null: native, or the smallest size the model takes
    augment: str = "none"  # a preset of data/transforms.py (PRESETS)
    split: str = "val"  # the split cnn-eval reads: val, or test where the dataset has one
    sampler: str = "shuffle"  # shuffle | balanced (with replacement, each class equally likely)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    in_memory: str = "auto"  # auto | true | false: one uint8 tensor on the device, batch-augmented
    max_bad_fraction: float = 0.01  # stop when more than this share of files cannot be read
    # Folder datasets: decoded once and held in memory when their images at the working size
    # fit in this many MB (0: always stream from the files).
    decode_budget_mb: float = 2048.0


@dataclass
class DigitsConfig(DataConfig):
    batch_size: int = 32
    val_fraction: float = 0.2


@dataclass
class VisionDataConfig(DataConfig):
    root: str | None = "data"
    download: bool = False  # true: fetch the files into data.root
    batch_size: int = 128
    val_fraction: float = 0.1


@dataclass
class FolderDataConfig(DataConfig):
    num_workers: int = 2
    augment: str = "imagenet"
    val_fraction: float = 0.1  # held out when there is no val/ folder
    max_per_class: int | None = None  # keep only the first N training images of each class


@dataclass
class SyntheticConfig(DataConfig):
    batch_size: int = 32
    num_classes: int = 10
    native_size: int = 32
    channels: int = 3
    train_samples: int = 512
    val_samples: int = 128
    noise: float = 0.5


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 1e-3
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = False  # false: no weight decay on norm weights and biases


@dataclass
class SGDConfig(OptimizerConfig):
    lr: float = 0.02
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4


@dataclass
class AdamConfig(OptimizerConfig):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = 0.05


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0


@dataclass
class SchedulerConfig:
    name: str = MISSING
    warmup_epochs: float = 0.0  # linear warmup from warmup_start_factor * lr, per iteration
    warmup_start_factor: float = 0.01


@dataclass
class StepLRConfig(SchedulerConfig):
    step_size: int = 30  # epochs
    gamma: float = 0.1


@dataclass
class MultiStepConfig(SchedulerConfig):
    milestones: list[int] = field(default_factory=lambda: [30, 60])  # epochs
    gamma: float = 0.1


@dataclass
class PlateauConfig(SchedulerConfig):
    factor: float = 0.1
    patience: int = 5  # epochs without improvement of val top-1
    threshold: float = 1e-4  # relative improvement that counts as progress
    min_lr: float = 0.0


@dataclass
class CosineConfig(SchedulerConfig):
    min_lr: float = 0.0


@dataclass
class OneCycleConfig(SchedulerConfig):
    pct_start: float = 0.25  # share of the run spent warming up to optimizer.lr
    div_factor: float = 25.0  # the start LR is optimizer.lr / div_factor
    final_div_factor: float = 1e4  # the last LR is the start LR / final_div_factor


@dataclass
class DeviceConfig:
    name: str = MISSING


@dataclass
class DDPConfig(DeviceConfig):
    num_procs: int | None = None  # null: every visible GPU (two CPU processes without one)
    backend: str = "auto"  # auto (nccl on GPUs, gloo on the CPU) | nccl | gloo
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm (GPUs only)


@dataclass
class SplitDeviceConfig(DeviceConfig):
    devices: list[str] = field(default_factory=lambda: ["cuda:0", "cuda:1"])  # tower 0, tower 1


@dataclass
class TrainerConfig:
    epochs: int = 8
    max_steps: int | None = None  # stop after this many optimizer steps
    # Batches per epoch (quick runs): an int is a count, a float in (0, 1) a share of them.
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    log_every_steps: int = 25
    checkpoint_every_steps: int | None = None  # also save last.pt every N steps, mid-epoch
    deterministic: bool = False  # deterministic CUDA kernels (CPU runs are always repeatable)
    channels_last: bool | None = None  # null: where it is faster (engine/precision.py)
    compile: bool = False  # torch.compile the model
    label_smoothing: float = 0.0
    grad_clip_norm: float | None = None
    accumulate_steps: int = 1  # an optimizer step every N batches
    ema_decay: float | None = None  # e.g. 0.999: keep and evaluate an exponential moving average
    # What picks best.pt, drives the plateau schedule and early stopping: val/acc1, val/acc5,
    # val/loss, val_ema/acc1, val_ema/loss (losses are minimised, accuracies maximised).
    monitor: str = "val/acc1"
    early_stopping_patience: int | None = None  # epochs without improvement before stopping
    early_stopping_min_delta: float = 0.0  # an improvement must be larger than this
    save_top_k: int = 1  # keep the K best epochs as checkpoints/best-e<EPOCH>.pt
    save_every_epochs: int | None = None  # also keep checkpoints/epoch-<EPOCH>.pt every N epochs
    class_weights: Any = None  # null | balanced (inverse class frequency) | a list, one per class
    overfit_batches: int | None = None  # train and validate on the same N fixed batches
    detect_anomaly: bool = False  # autograd's anomaly detection (slow: for debugging)
    profile_steps: list[int] | None = None  # [A, B]: torch.profiler over steps A..B


@dataclass
class TrackingConfig:
    histogram_every: int = 0  # weight and gradient histograms every N epochs (0: off)
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
    seed: int = 0
    resume: str | None = (
        None  # null | auto (this run folder's last.pt) | a checkpoint or run folder
    )


@dataclass
class EvalDataConfig:
    split: str | None = None  # null: the checkpoint's own value (val)
    root: str | None = None
    eval_batch_size: int | None = None


@dataclass
class EvalConfig:
    checkpoint: str = MISSING
    data: Any = field(default_factory=EvalDataConfig)
    device: Any = MISSING
    precision: str = "auto"  # auto: the run's own precision
    limit_batches: int | None = None
    weights: str = "auto"  # auto (those the run's monitor chose) | model | ema
    tta: str = "none"  # none | flip | ten_crop: softmax averaged over the views


@dataclass
class PredictConfig:
    checkpoint: str = MISSING
    images: Any = MISSING  # a list of image files, or a folder
    topk: int = 5
    weights: str = "auto"  # auto (those the run's monitor chose) | model | ema
    tta: str = "none"  # none | flip | ten_crop: softmax averaged over the views


@dataclass
class ExportConfig:
    checkpoint: str = MISSING
    format: str = MISSING  # onnx | torchscript | safetensors
    output: str | None = (
        None  # null: next to the checkpoint, best.onnx / best.ts / best.safetensors
    )
    tolerance: float = 1e-4  # largest accepted logit difference, relative to the largest logit
    weights: str = "auto"  # auto (those the run's monitor chose) | model | ema
    overwrite: bool = False  # replace an existing output= file (never a checkpoint)


@dataclass
class LrFindConfig(TrainConfig):
    start_lr: float = 1e-6  # the LR range test's first LR
    end_lr: float = 1.0  # and its last (raised exponentially over `steps`)
    steps: int = 100  # training steps of the test (it stops early once the loss diverges)


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
