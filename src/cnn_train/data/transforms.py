"""Augmentation presets (`data.augment`): per-image torchvision v2 pipelines and batched tensor ops.

Training only: evaluation resizes one way for every preset (`data/preprocessing.py`).
Per-image pipelines take a uint8 RGB tensor [3, H, W] and return uint8 [3, S, S] (float32 in
[0, 1] when they add lighting noise); `Normalize` turns whole batches into normalized float32 on
their device, so workers ship 4x fewer bytes. Batched versions exist for the presets that need no
resampling (`none`, `cifar`), so datasets held in memory augment whole batches on their device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from cnn_train.data.policies import interpolation_mode
from cnn_train.errors import UserError

PRESETS = ("none", "cifar", "imagenet", "alexnet2012")
BATCHED_PRESETS = ("none", "cifar")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PCA of ImageNet's RGB pixels in [0, 1] (Krizhevsky et al. 2012, values as in fb.resnet.torch).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
LIGHTING_STD = 0.1


class Lighting(nn.Module):
    """AlexNet's PCA colour noise: add V @ (alpha * lambda), alpha ~ N(0, std^2), to every pixel.

    Works on float RGB images in [0, 1], one [3, H, W] or a batch [B, 3, H, W].
    """

    def __init__(
        self,
        std: float = LIGHTING_STD,
        eigval: Sequence[float] = IMAGENET_EIGVAL,
        eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC,
    ) -> None:
        super().__init__()
        self.std = std
        self.register_buffer("eigval", torch.tensor(eigval), persistent=False)
        self.register_buffer("eigvec", torch.tensor(eigvec), persistent=False)

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        batch = images.shape[:-3]
        alpha = torch.randn((*batch, 3), generator=generator, device=images.device) * self.std
        rgb = (alpha * self.eigval.to(images.device)) @ self.eigvec.to(images.device).T
        return images + rgb[..., None, None]


class Normalize:
    """(x - mean) / std for batches [.., C, H, W] of uint8 (0..255) or float ([0, 1]) images."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        channels = images.shape[-3]
        mean, std = self.mean[:, :channels], self.std[:, :channels]
        scale = 1.0 / (255.0 * std) if images.dtype == torch.uint8 else 1.0 / std
        return images.float().mul_(scale).sub_(mean / std)


def image_transform(
    preset: str,
    size: int,
    *,
    train: bool = True,
    interpolation: str = "bilinear",
    rrc_scale: Sequence[float] = (0.08, 1.0),
    policy: v2.Transform | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-image training pipeline of `preset` at output side `size` (normalize batches
    afterwards), resampling with `interpolation`; `policy` (`data.auto_augment`) comes after the
    crop and flip. Evaluation has one pipeline for every preset and path: `EvalPreprocessing`."""
    check_preset(preset)
    if not train:
        raise ValueError("evaluation images go through data.preprocessing.EvalPreprocessing")
    mode = interpolation_mode(interpolation)
    resize = round(size * 256 / 224)  # ImageNet's 256 -> 224, scaled to other sizes
    square = v2.Resize((size, size), interpolation=mode, antialias=True)
    flip = v2.RandomHorizontalFlip()
    if preset == "none":
        return v2.Compose([square])
    if preset == "cifar":
        steps = [square, v2.RandomCrop(size, padding=size // 8), flip]
    elif preset == "imagenet":
        crop = v2.RandomResizedCrop(
            size, scale=tuple(rrc_scale), interpolation=mode, antialias=True
        )
        steps = [crop, flip]
    else:  # alexnet2012
        steps = [v2.Resize(resize, interpolation=mode, antialias=True), v2.RandomCrop(size), flip]
    if policy is not None:
        steps.append(policy)
    if preset == "alexnet2012":
        steps += [v2.ToDtype(torch.float32, scale=True), Lighting()]
    return v2.Compose(steps)


def check_preset(preset: str) -> None:
    """Raise a UserError naming the valid presets when `preset` is not one."""
    if preset not in PRESETS:
        raise UserError(f"data.augment={preset} is not one of {', '.join(PRESETS)}")


def augment_batch(
    images: torch.Tensor, preset: str, *, train: bool, generator: torch.Generator
) -> torch.Tensor:
    """Batched `preset` on uint8 images [B, C, S, S] already at their final side: same shape out."""
    if preset == "none" or not train:
        return images
    batch, _, height, width = images.shape
    pad = width // 8
    padded = F.pad(images, (pad, pad, pad, pad))
    device = images.device
    top = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(device)
    left = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(device)
    flip = (torch.rand(batch, generator=generator) < 0.5).to(device)
    rows = top[:, None] + torch.arange(height, device=device)
    cols = torch.arange(width, device=device).expand(batch, width)
    cols = torch.where(flip[:, None], cols.flip(-1), cols) + left[:, None]
    index = torch.arange(batch, device=device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=device)[None, :, None, None]
    return padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]
