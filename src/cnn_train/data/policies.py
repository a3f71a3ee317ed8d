"""Per-image augmentation policies (`data.auto_augment`) and random erasing (`data.random_erase`).

torchvision's policies draw one operation and magnitude per call, so each sample is augmented
alone, under an RNG seeded from its own seed (`order.sample_seed`): on the worker path inside
the worker, on the in-memory path one sample after another on the device. Random erasing comes
after normalisation (as in torchvision's reference): the box is drawn with the sample's RNG by
`v2.RandomErasing`, and the boxes of a batch are zeroed on the normalized batch at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import AutoAugmentPolicy, InterpolationMode

from cnn_train.errors import UserError
from cnn_train.schema.data import AUTO_AUGMENT_POLICIES, DataConfig

INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
NO_BOX = (0, 0, 0, 0)  # (top, left, height, width) of a sample that is not erased


# Every default lives in the schema; records written before a setting existed get it too.
DEFAULTS = {
    field.name: field.default if field.default is not MISSING else field.default_factory()
    for field in fields(DataConfig)
    if field.default is not MISSING or field.default_factory is not MISSING
}


@dataclass(frozen=True)
class PolicySettings:
    """`data.auto_augment` and its strengths, and `data.random_erase`'s probability."""

    name: str = DEFAULTS["auto_augment"]
    ra_magnitude: int = DEFAULTS["ra_magnitude"]
    ra_num_ops: int = DEFAULTS["ra_num_ops"]
    augmix_severity: int = DEFAULTS["augmix_severity"]
    random_erase: float = DEFAULTS["random_erase"]

    @property
    def active(self) -> bool:
        """Whether a policy or random erasing changes the images."""
        return self.name != "none" or self.random_erase > 0


def interpolation_mode(name: str) -> InterpolationMode:
    """`data.interpolation` as torchvision's mode (one-line UserError for anything else)."""
    if name not in INTERPOLATIONS:
        raise UserError(f"data.interpolation={name} is not one of {', '.join(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]


def build_policy(settings: PolicySettings) -> v2.Transform | None:
    """The v2 policy `settings.name` names (None for `none`), for uint8 images [C, H, W]."""
    name = settings.name
    if name not in AUTO_AUGMENT_POLICIES:
        raise UserError(
            f"data.auto_augment={name} is not one of {', '.join(AUTO_AUGMENT_POLICIES)}"
        )
    # The policies' geometric operations resample with affine grids, which know only nearest
    # and bilinear; bicubic stays with the resizes.
    mode = InterpolationMode.BILINEAR
    if name == "trivialaugment":
        return v2.TrivialAugmentWide(interpolation=mode)
    if name == "randaugment":
        return v2.RandAugment(
            num_ops=settings.ra_num_ops, magnitude=settings.ra_magnitude, interpolation=mode
        )
    if name == "autoaugment_imagenet":
        return v2.AutoAugment(AutoAugmentPolicy.IMAGENET, interpolation=mode)
    if name == "autoaugment_cifar10":
        return v2.AutoAugment(AutoAugmentPolicy.CIFAR10, interpolation=mode)
    if name == "augmix":
        return v2.AugMix(severity=settings.augmix_severity, interpolation=mode)
    return None


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with the global RNGs of the CPU and `device` seeded from `seed` only, and
    give the caller's RNG states back afterwards (policies draw from the global RNGs)."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


class EraseBox:
    """One sample's random-erase box, drawn from the global RNG as `v2.RandomErasing(p)` draws
    it: (top, left, height, width) as int64 [4], all zero when the sample is not erased."""

    def __init__(self, probability: float) -> None:
        self.probability = probability
        self.eraser = v2.RandomErasing(p=1.0, value=0)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        box = NO_BOX
        if torch.rand(1).item() < self.probability:
            params = self.eraser.make_params([image])
            if params["v"] is not None:  # else ten tries found no box that fits
                box = (params["i"], params["j"], params["h"], params["w"])
        return torch.tensor(box, dtype=torch.int64)


class SampleAugment:
    """The policy and erase box of the samples of a batch, each a function of its seed alone."""

    def __init__(self, settings: PolicySettings) -> None:
        self.policy = build_policy(settings)
        self.erase_box = EraseBox(settings.random_erase) if settings.random_erase > 0 else None

    def one(self, image: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 [C, H, W] -> (the image with the policy applied, its erase box or None)."""
        with seeded(seed, image.device):
            if self.policy is not None:
                image = self.policy(image)
            return image, self.erase_box(image) if self.erase_box else None

    def __call__(
        self, images: torch.Tensor, seeds: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch [B, C, H, W] sample by sample: (images, erase boxes [B, 4] or None)."""
        results = [self.one(image, seed) for image, seed in zip(images, seeds, strict=True)]
        out = torch.stack([image for image, _ in results]) if self.policy else images
        boxes = torch.stack([box for _, box in results]) if self.erase_box else None
        return out, boxes


def erase(images: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
    """Zero each normalized image's box ([B, 4] rows of top, left, height, width), in place:
    `v2.RandomErasing(value=0)` after normalisation, for a whole batch at once."""
    if boxes is None:
        return images
    boxes = boxes.to(images.device)
    top, left, height, width = boxes.unbind(1)
    rows = torch.arange(images.shape[-2], device=images.device)
    cols = torch.arange(images.shape[-1], device=images.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return images.masked_fill_(mask[:, None], 0.0)


@dataclass(frozen=True)
class Augmentation:
    """What the `data` config adds to the preset (`data.augment`): the per-image policies, the
    training crop side (None: the model's input side), evaluation's short-side resize (None: the
    preset's rule), the interpolation of every resize, RandomResizedCrop's area range and the
    repeats of each image in an epoch (`data.repeated_aug`)."""

    policies: PolicySettings = PolicySettings()
    train_crop_size: int | None = DEFAULTS["train_crop_size"]
    val_resize_size: int | None = DEFAULTS["val_resize_size"]
    interpolation: str = DEFAULTS["interpolation"]
    rrc_scale: tuple[float, ...] = tuple(DEFAULTS["rrc_scale"])
    repeats: int = DEFAULTS["repeated_aug"]

    @classmethod
    def from_config(cls, data: Any) -> Augmentation:
        """Read a `data` config (keys it lacks, as in older checkpoints: the schema's defaults)."""

        def value(key: str) -> Any:
            return data.get(key, DEFAULTS.get(key))

        policies = PolicySettings(
            name=value("auto_augment"),
            ra_magnitude=value("ra_magnitude"),
            ra_num_ops=value("ra_num_ops"),
            augmix_severity=value("augmix_severity"),
            random_erase=value("random_erase"),
        )
        return cls(
            policies=policies,
            train_crop_size=value("train_crop_size"),
            val_resize_size=value("val_resize_size"),
            interpolation=value("interpolation"),
            rrc_scale=tuple(value("rrc_scale")),
            repeats=value("repeated_aug"),
        )

    @property
    def custom_sizes(self) -> bool:
        """Whether a size or the interpolation differs from the preset's plain rule."""
        return (
            self.train_crop_size is not None
            or self.val_resize_size is not None
            or self.interpolation != DEFAULTS["interpolation"]
        )
