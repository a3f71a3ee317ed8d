"""Datasets held in memory as one uint8 tensor, and a loader that batches them with tensor ops."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LabelledImages:
    """One split: uint8 images [N, C, H, W] (C is 1 or 3) and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class InMemoryDataset:
    """All splits of a dataset, its class names, native side and per-channel mean/std in [0, 1]."""

    splits: dict[str, LabelledImages]
    class_names: list[str]
    native_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch to size x size (bilinear, antialiased), keeping uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


class InMemoryLoader:
    """Yields normalized float batches [B, 3, S, S] and labels from a split held on `device`.

    Order depends only on (seed, epoch): the same batches come out whatever else runs.
    """

    def __init__(
        self,
        data: LabelledImages,
        *,
        image_size: int,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
    ) -> None:
        self.images = resize_uint8(data.images, image_size).to(device)
        self.labels = data.labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.device = device
        channels = self.images.shape[1]
        mean_t = torch.tensor(mean[:channels], device=device).view(1, channels, 1, 1)
        std_t = torch.tensor(std[:channels], device=device).view(1, channels, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    @property
    def dataset_size(self) -> int:
        """How many samples the split holds."""
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffled order the next pass yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        count = len(self.labels)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(count, generator=generator).to(self.device)
        else:
            order = torch.arange(count, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images.index_select(0, index).float().mul_(self._scale).add_(self._shift)
            yield images.expand(-1, 3, -1, -1), self.labels.index_select(0, index)
