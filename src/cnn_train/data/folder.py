"""ImageFolder trees: `root/<class>/*` or `root/{train,val,test}/<class>/*`."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split
from torchvision.datasets.folder import find_classes, make_dataset

from cnn_train.data.decode import decode_files, too_many_bad_files
from cnn_train.data.memory import LabelledImages
from cnn_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cnn_train.errors import UserError

log = logging.getLogger(__name__)

SPLIT_SEED = 0
DECODE_BUDGET_MB = 2048  # `data.decode_budget_mb`: CIFAR-10's 50,000 images take 154 MB at 32 px
LAYOUT = (
    "expected root/<class>/<image> or root/train/<class>/<image> "
    "(optional root/val/<class>/..., root/test/<class>/...)"
)


@dataclass
class ImageFiles:
    """One split on disk: image paths and their int64 labels."""

    paths: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class DecodedSplit:
    """One split decoded at one size: the readable images, and the files that failed."""

    data: LabelledImages
    failures: list[str]


@dataclass
class FileDataset:
    """All splits of a folder dataset, its class names and the mean/std to normalize with.

    Splits whose decoded images fit `decode_budget_mb` can be decoded once and held in memory.
    """

    splits: dict[str, ImageFiles]
    class_names: list[str]
    native_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    decode_budget_mb: float = DECODE_BUDGET_MB
    _decoded: dict[tuple[str, int], DecodedSplit] = field(default_factory=dict, repr=False)

    def decoded_mb(self, size: int) -> float:
        """The memory all splits take decoded at size x size, in MB (10^6 bytes)."""
        return sum(len(files) for files in self.splits.values()) * 3 * size * size / 1e6

    def fits_in_memory(self, size: int) -> bool:
        """Whether all splits decoded at `size` fit `decode_budget_mb`."""
        return self.decoded_mb(size) <= self.decode_budget_mb

    def in_memory_split(
        self, split: str, size: int, *, max_bad_fraction: float, world_size: int = 1
    ) -> tuple[LabelledImages, int]:
        """`split` decoded once at `size` (the processes of a job share the cores to decode it),
        and how many of its files were left out as unreadable."""
        decoded = self.decode(split, size, threads=max(1, _cores() // world_size))
        error = too_many_bad_files(len(decoded.failures), len(self.splits[split]), max_bad_fraction)
        if error is not None:
            raise error
        return decoded.data, len(decoded.failures)

    def decode(self, split: str, size: int, *, threads: int) -> DecodedSplit:
        """Decode `split` at size x size once (in parallel); unreadable files are left out."""
        key = (split, size)
        if key not in self._decoded:
            files = self.splits[split]
            start = time.perf_counter()
            images, failures = decode_files(
                files.paths, size, threads=threads, desc=f"decoding {split}"
            )
            for failure in failures.values():
                log.warning(f"skipped unreadable image {failure}")
            data = LabelledImages(images, files.labels)
            if failures:
                keep = [index for index in range(len(files)) if index not in failures]
                data = LabelledImages(images[keep], files.labels[keep])
            self._decoded[key] = DecodedSplit(data, list(failures.values()))
            log.info(
                f"decoded the {split} split once: {len(data)} images at {size} px, "
                f"{data.images.numel() / 1e6:.0f} MB, {time.perf_counter() - start:.1f} s"
            )
        return self._decoded[key]


def _cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _visible(path: str) -> bool:
    # Every visible file counts, so a stray non-image file is reported as skipped, not ignored.
    return not os.path.basename(path).startswith(".")


def scan_split(
    directory: Path, class_names: list[str] | None = None, max_per_class: int | None = None
) -> tuple[list[str], ImageFiles]:
    """Class names and files of one `<class>/<image>` tree (the first `max_per_class` of each)."""
    try:
        names, _ = find_classes(str(directory))
    except FileNotFoundError as error:
        raise UserError(f"no class folders in {directory}; {LAYOUT}") from error
    if class_names is not None and names != class_names:
        raise UserError(
            f"the class folders of {directory} differ from those of train/; {LAYOUT} "
            "with the same class folder names in every split"
        )
    empty = [name for name in names if not any(_visible(p) for p in os.listdir(directory / name))]
    if empty:
        raise UserError(f"class folder {directory / empty[0]} is empty; {LAYOUT}")
    index = {name: i for i, name in enumerate(names)}
    samples = make_dataset(str(directory), index, is_valid_file=_visible)
    if max_per_class:
        counts = dict.fromkeys(range(len(names)), 0)
        kept = []
        for path, label in samples:
            counts[label] += 1
            if counts[label] <= max_per_class:
                kept.append((path, label))
        samples = kept
    paths = [path for path, _ in samples]
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return names, ImageFiles(paths, labels)


def stratified_split(files: ImageFiles, fraction: float) -> tuple[ImageFiles, ImageFiles]:
    """A fixed stratified train/val split of one split's files."""
    indices = list(range(len(files)))
    try:
        train, val = train_test_split(
            indices, test_size=fraction, stratify=files.labels.numpy(), random_state=SPLIT_SEED
        )
    except ValueError as error:
        raise UserError(
            f"cannot hold out data.val_fraction={fraction} of {len(files)} images per class "
            f"({error}); add images, change data.val_fraction, or add a val/ folder"
        ) from error
    pick = lambda rows: ImageFiles([files.paths[i] for i in rows], files.labels[rows])  # noqa: E731
    return pick(sorted(train)), pick(sorted(val))


def scan_folder(
    root: str | None, val_fraction: float, max_per_class: int | None = None
) -> FileDataset:
    """Find train/val/test under `root`; hold out a stratified val split when there is no val/.

    `max_per_class` keeps the first files of each class in the training tree (a quick subset).
    """
    if not root:
        raise UserError(f"data.root is required for this dataset; {LAYOUT}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"data.root={root} is not a directory; {LAYOUT}")
    train_dir = base / "train" if (base / "train").is_dir() else base
    names, train = scan_split(train_dir, max_per_class=max_per_class)
    splits: dict[str, ImageFiles] = {}
    if train_dir != base and (base / "val").is_dir():
        splits["train"], splits["val"] = train, scan_split(base / "val", names)[1]
    else:
        splits["train"], splits["val"] = stratified_split(train, val_fraction)
    if train_dir != base and (base / "test").is_dir():
        splits["test"] = scan_split(base / "test", names)[1]
    return FileDataset(splits, names, native_size=0)


def load_folder_dataset(cfg: DictConfig) -> FileDataset:
    """Any ImageFolder tree; `data.root` points at it."""
    return scan_folder(cfg.root, cfg.val_fraction, cfg.max_per_class)
