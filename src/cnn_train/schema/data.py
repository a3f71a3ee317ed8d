"""The `data` group's schemas: every data key's type, default and bounds."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from cnn_train.schema.fields import MAX_CLASSES, MAX_IMAGE_SIZE, bounded

AUTO_AUGMENT_POLICIES = (
    "none",
    "trivialaugment",
    "randaugment",
    "autoaugment_imagenet",
    "autoaugment_cifar10",
    "augmix",
)


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
    # a per-image policy after the preset's crop and flip (a preset that augments)
    auto_augment: str = bounded("none", choices=AUTO_AUGMENT_POLICIES)
    ra_magnitude: int = bounded(9, ge=0, le=30)  # randaugment's magnitude (of 31 bins)
    ra_num_ops: int = bounded(2, ge=1, le=16)  # randaugment's operations per image
    augmix_severity: int = bounded(3, ge=1, le=10)  # augmix's operation strength
    random_erase: float = bounded(0.0, ge=0, le=1)  # probability, after normalisation (0: off)
    # Sizes (null: today's rule from data.image_size): the training crop, and evaluation's
    # resize of the shorter side and its centre crop.
    train_crop_size: int | None = bounded(None, ge=1, le=MAX_IMAGE_SIZE)
    val_resize_size: int | None = bounded(None, ge=1, le=MAX_IMAGE_SIZE)
    val_crop_size: int | None = bounded(None, ge=1, le=MAX_IMAGE_SIZE)
    interpolation: str = bounded("bilinear", choices=("bilinear", "bicubic"))
    # RandomResizedCrop's range of the area kept (the imagenet preset)
    rrc_scale: list[float] = bounded([0.08, 1.0], gt=0, le=1, length=2)  # noqa: RUF009
    # each sampled image N times an epoch, differently augmented (1: off); steps stay the same
    repeated_aug: int = bounded(1, ge=1, le=64)
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
