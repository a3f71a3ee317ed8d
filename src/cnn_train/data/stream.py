"""Per-image loading in DataLoader workers: for folders, and presets that resample each image."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cnn_train.data.decode import BadImageError, read_rgb, too_many_bad_files
from cnn_train.data.folder import ImageFiles
from cnn_train.data.memory import LabelledImages
from cnn_train.data.order import batch_count, pass_indices, sample_seed
from cnn_train.data.policies import EraseBox, erase, seeded
from cnn_train.data.transforms import Normalize

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (the sample's RNG seed, dataset index)
# (image, label, erase box or None), or the path of a file that failed
Sample = tuple[torch.Tensor, int, torch.Tensor | None] | str
CPU = torch.device("cpu")


class ImageSamples(Dataset):
    """Images from files or a uint8 tensor, transformed with an RNG seeded by the key's seed.

    Indexed by (seed, index) keys (`order.sample_seed` of the sample's place in the pass), so the
    result does not depend on which worker loads it. `erase_box` draws each sample's
    `data.random_erase` box with the same RNG; the loader erases after normalising.
    """

    def __init__(
        self,
        source: ImageFiles | LabelledImages,
        transform: Callable[[torch.Tensor], torch.Tensor],
        erase_box: EraseBox | None = None,
    ) -> None:
        self.source = source
        self.transform = transform
        self.erase_box = erase_box

    def __len__(self) -> int:
        return len(self.source)

    def _image(self, index: int) -> torch.Tensor:
        if isinstance(self.source, LabelledImages):
            image = self.source.images[index]
            return image.expand(3, -1, -1) if image.shape[0] == 1 else image
        return read_rgb(self.source.paths[index])

    def __getitem__(self, key: Key) -> Sample:
        seed, index = key
        try:
            image = self._image(index)
        except (BadImageError, OSError) as error:
            return f"{self.source.paths[index]} ({error})"  # type: ignore[union-attr]
        with seeded(seed, CPU):
            image = self.transform(image)
            box = self.erase_box(image) if self.erase_box is not None else None
        return image, int(self.source.labels[index]), box


class KeyBatches(Sampler[list[Key]]):
    """Batches of (sample seed, index) keys in the order of `pass_indices` (`repeats`:
    `data.repeated_aug`); a sample's seed is `sample_seed` of its position in the rank's pass."""

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
        repeats: int = 1,
    ) -> None:
        self.count, self.train, self.batch_size, self.repeats = count, train, batch_size, repeats
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
            repeats=self.repeats,
        ).tolist()
        seeds = [
            sample_seed(self.seed, self.epoch, self.rank, place) for place in range(len(order))
        ]
        keys = list(zip(seeds, order, strict=True))
        for start in range(0, len(keys), self.batch_size):
            yield keys[start : start + self.batch_size]


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[str]]


def collate(samples: list[Sample]) -> Batch:
    """Stack the good samples (images, labels, erase boxes or None); pass the failed paths on so
    the main process reports them."""
    good = [sample for sample in samples if not isinstance(sample, str)]
    bad = [sample for sample in samples if isinstance(sample, str)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), None, bad
    images = torch.stack([image for image, _, _ in good])
    labels = torch.tensor([label for _, label, _ in good], dtype=torch.int64)
    boxes = [box for _, _, box in good if box is not None]
    return images, labels, torch.stack(boxes) if boxes else None, bad


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
        repeats: int = 1,
    ) -> None:
        self.batches = KeyBatches(
            len(samples),
            train=train,
            batch_size=batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            balanced_by=samples.source.labels.cpu() if balanced and train else None,
            repeats=repeats,
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
        for images, labels, boxes, bad in self.loader:
            for failure in bad:
                log.warning(f"skipped unreadable image {failure}")
            self.skipped_files += len(bad)
            error = too_many_bad_files(self.skipped_files, self._size, self.max_bad_fraction)
            if error is not None:
                raise error
            if len(labels):
                inputs = self.normalize(images.to(self.device, non_blocking=True))
                yield erase(inputs, boxes), labels.to(self.device, non_blocking=True)
