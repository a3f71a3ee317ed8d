"""The `model`, `optimizer`, `scheduler` and `device` groups' schemas."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from cnn_train.schema.fields import MAX_CLASSES, MAX_EPOCHS, bounded


@dataclass
class ModelConfig:
    name: str = MISSING
    num_classes: int | None = bounded(None, ge=2, le=MAX_CLASSES)  # null: the dataset's count
    variant: str = "auto"  # auto | imagenet | small (auto: small for images of 32 px and below)
    weights: str | None = None  # a local file: a cnn-train checkpoint or a torchvision state_dict
    freeze_features: bool = False  # train the classifier only (with model.weights)


@dataclass
class ResNetModelConfig(ModelConfig):
    # zero gamma in the last BatchNorm of each residual block (Goyal et al. 2017); null: on when
    # training from scratch, off when model.weights loads a network
    zero_init_residual: bool | None = None
    # stochastic depth's largest drop rate, reached by the last block (linear over the blocks)
    drop_path_rate: float = bounded(0.0, ge=0, lt=1)


@dataclass
class DropoutModelConfig(ModelConfig):
    dropout: float = bounded(0.5, ge=0, lt=1)  # before each hidden fully connected layer


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = bounded(1e-3, gt=0)
    weight_decay: float = bounded(0.0, ge=0, le=1)  # above 1, lr x decay flips weights at lr 1
    decay_norm_and_bias: bool = False  # false: no weight decay on norm weights and biases
    # the global batch optimizer.lr is given for (null: off); the LR used scales linearly to
    # processes x data.batch_size x trainer.accumulate_steps
    lr_base_batch: int | None = bounded(None, ge=1, le=2**30)


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
