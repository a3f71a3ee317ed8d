"""Datasets held in memory as one uint8 tensor, and a loader that batches them with tensor ops."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnn_train.data.order import batch_count, epoch_generator, pass_indices, sample_seed
from cnn_train.data.policies import PolicySettings, SampleAugment, erase
from cnn_train.data.preprocessing import EvalPreprocessing
from cnn_train.data.transforms import Normalize, augment_batch


@dataclass
class LabelledImages:
    """One split: uint8 images [N, C, H, W] (C is 1 or 3) and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class InMemoryDataset:
    """All splits of a dataset, its class names, native side and per-channel mean/std in [0, 1]."""

    splits: dict[str, LabelledImages]
    class_names: list[str]
    native_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def resize_uint8(images: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize a uint8 training batch to size x size (antialiased `interpolation`: bilinear or
    bicubic), keeping uint8: `data.train_crop_size` and `data.interpolation` on this path.

    Evaluation splits are resized by `EvalPreprocessing`, as every other evaluation path does.
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(
        images.float(), size=(size, size), mode=interpolation, antialias=True, align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


class InMemoryLoader:
    """Yields normalized float batches [B, 3, S, S] and labels from a split held on `device`.

    Grayscale images are repeated to 3 channels. Order and augmentation depend only on
    (seed, epoch, batch position, rank): the same batches come out whatever else runs. Training
    images are resized once to `image_size` (the training crop) with `interpolation`; the preset
    crops and flips whole batches, then `policies` (`data.auto_augment`, `data.random_erase`)
    augment each sample on the device with an RNG seeded by its position in the pass
    (`order.sample_seed`). `repeats` is `data.repeated_aug` (`order.pass_indices`).
    `skipped_files` counts the files of a decoded folder split that were left out as unreadable.
    `balanced` draws a shuffled pass with replacement, each class equally likely.
    An evaluation split (not shuffled) is resized and normalized by `evaluation` (default: the
    plain resize to `image_size`), so its batches equal every other evaluation path's.
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
        augment: str = "none",
        rank: int = 0,
        world_size: int = 1,
        skipped_files: int = 0,
        evaluation: EvalPreprocessing | None = None,
        balanced: bool = False,
        interpolation: str = "bilinear",
        policies: PolicySettings | None = None,
        repeats: int = 1,
    ) -> None:
        self.balanced_by = data.labels.clone() if balanced and shuffle else None
        self.repeats = repeats
        policies = policies or PolicySettings()
        self.sample_augment = SampleAugment(policies) if shuffle and policies.active else None
        if shuffle:
            self.images = resize_uint8(data.images, image_size, interpolation).to(device)
            self.normalize = Normalize(mean, std, device)
        else:
            evaluation = evaluation or EvalPreprocessing(image_size, mean, std)
            self.images = evaluation.resize(data.images).to(device)
            self.normalize = evaluation.normalizer(device)
        self.skipped_files = skipped_files
        self.labels = data.labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.augment = augment
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.device = device

    @property
    def dataset_size(self) -> int:
        """How many samples the split holds."""
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffled order the next pass yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return batch_count(
            len(self.labels),
            train=self.drop_last,
            batch_size=self.batch_size,
            rank=self.rank,
            world_size=self.world_size,
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = pass_indices(
            len(self.labels),
            train=self.shuffle,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            balanced_by=self.balanced_by,
            repeats=self.repeats,
        ).to(self.device)
        for position, start in enumerate(range(0, len(order), self.batch_size)):
            index = order[start : start + self.batch_size]
            images, boxes = self._augmented(self.images.index_select(0, index), position, start)
            inputs = erase(self.normalize(images), boxes)
            yield inputs.expand(-1, 3, -1, -1), self.labels.index_select(0, index)

    def _augmented(
        self, images: torch.Tensor, position: int, start: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch at `position` (its first sample `start` in the pass) augmented: the preset
        on the whole batch, then each sample's policy and erase box."""
        if not self.shuffle or self.augment == "none":
            return images, None
        generator = epoch_generator(self.seed, self.epoch, position, self.rank)
        images = augment_batch(images, self.augment, train=True, generator=generator)
        if self.sample_augment is None:
            return images, None
        seeds = [
            sample_seed(self.seed, self.epoch, self.rank, start + offset)
            for offset in range(len(images))
        ]
        return self.sample_augment(images, seeds)
