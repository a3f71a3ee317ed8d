"""Per-image loading in DataLoader workers: for folders, and presets that resample each image."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cnn_train.data.decode import BadImageError, read_rgb, too_many_bad_files
from cnn_train.data.folder import ImageFiles
from cnn_train.data.memory import LabelledImages
from cnn_train.data.order import batch_count, mixed_seed, pass_indices
from cnn_train.data.transforms import Normalize

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (epoch, sample index)
Sample = tuple[torch.Tensor, int] | str  # (image, label), or the path of a file that failed


class ImageSamples(Dataset):
    """Images from files or a uint8 tensor, transformed with an RNG seeded by (seed, epoch, index).

    Indexed by (epoch, index) keys, so the result does not depend on which worker loads it.
    """

    def __init__(
        self,
        source: ImageFiles | LabelledImages,
        transform: Callable[[torch.Tensor], torch.Tensor],
        seed: int,
    ) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def _image(self, index: int) -> torch.Tensor:
        if isinstance(self.source, LabelledImages):
            image = self.source.images[index]
            return image.expand(3, -1, -1) if image.shape[0] == 1 else image
        return read_rgb(self.source.paths[index])

    def __getitem__(self, key: Key) -> Sample:
        epoch, index = key
        try:
            image = self._image(index)
        except (BadImageError, OSError) as error:
            return f"{self.source.paths[index]} ({error})"  # type: ignore[union-attr]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mixed_seed(self.seed, epoch, index))
            return self.transform(image), int(self.source.labels[index])


class KeyBatches(Sampler[list[Key]]):
    """Batches of (epoch, index) keys in the order of `pass_indices`."""

    def __init__(
        self,
        count: int,
        *,
        train: bool,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        balanced_by: torch.Tensor | None = None,
    ) -> None:
        self.count, self.train, self.batch_size = count, train, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.balanced_by = balanced_by  # labels: draw each class equally likely (training)
        self.epoch = 0

    def __len__(self) -> int:
        return batch_count(
            self.count,
            train=self.train,
            batch_size=self.batch_size,
            rank=self.rank,
            world_size=self.world_size,
        )

    def __iter__(self) -> Iterator[list[Key]]:
        order = pass_indices(
            self.count,
            train=self.train,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            balanced_by=self.balanced_by,
        ).tolist()
        for start in range(0, len(order), self.batch_size):
            yield [(self.epoch, index) for index in order[start : start + self.batch_size]]


def collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack the good samples; pass the failed paths on so the main process reports them."""
    good = [sample for sample in samples if not isinstance(sample, str)]
    bad = [sample for sample in samples if isinstance(sample, str)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), bad
    images = torch.stack([image for image, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    return images, labels, bad


class StreamLoader:
    """DataLoader-backed loader with the in-memory loader's interface, counting skipped files."""

    def __init__(
        self,
        samples: ImageSamples,
        *,
        batch_size: int,
        device: torch.device,
        train: bool,
        seed: int,
        num_workers: int,
        max_bad_fraction: float,
        normalize: Normalize,
        rank: int = 0,
        world_size: int = 1,
        balanced: bool = False,
    ) -> None:
        self.batches = KeyBatches(
            len(samples),
            train=train,
            batch_size=batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            balanced_by=samples.source.labels.cpu() if balanced and train else None,
        )
        self.device = device
        self.normalize = normalize
        self.max_bad_fraction = max_bad_fraction
        self._size = len(samples)
        self.skipped_files = 0
        self.loader = DataLoader(
            samples,
            batch_sampler=self.batches,
            num_workers=num_workers,
            collate_fn=collate,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    @property
    def dataset_size(self) -> int:
        """How many samples (files) the split holds."""
        return self._size

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next pass yields."""
        self.batches.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.skipped_files = 0
        for images, labels, bad in self.loader:
            for failure in bad:
                log.warning(f"skipped unreadable image {failure}")
            self.skipped_files += len(bad)
            error = too_many_bad_files(self.skipped_files, self._size, self.max_bad_fraction)
            if error is not None:
                raise error
            if len(labels):
                yield (
                    self.normalize(images.to(self.device, non_blocking=True)),
                    labels.to(self.device, non_blocking=True),
                )
