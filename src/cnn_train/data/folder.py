"""ImageFolder trees: `root/<class>/*` or `root/{train,val,test}/<class>/*`.

The split layout is recognised only when root's visible folders are split names (`train`, and
optionally `val`, `test`) and nothing else: a flat layout may have a class named `train`.
Image files are listed by `image_files` (visible regular files with an image extension).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from cnn_train.data.decode import (
    decode_files,
    folder_entries,
    image_files,
    is_system_path,
    report_ignored,
    too_many_bad_files,
)
from cnn_train.data.memory import LabelledImages
from cnn_train.data.order import holdout_split
from cnn_train.data.registry import register_dataset
from cnn_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cnn_train.errors import UserError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
LAYOUT = (
    "expected root/<class>/<image> or root/train/<class>/<image> "
    "(optional root/val/<class>/..., root/test/<class>/...; then no other folders in root)"
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
    decode_budget_mb: float = 0.0  # set from `data.decode_budget_mb` (schema.DataConfig)
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


def class_folders(directory: Path) -> list[str]:
    """The visible folders directly in `directory` (links into /dev, /proc, /sys left out)."""
    _, subfolders = folder_entries(str(directory))
    return [os.path.basename(path) for path in subfolders]


def unique_files(samples: list[tuple[str, int]], taken: set[str]) -> list[tuple[str, int]]:
    """Drop files whose real path is already in `taken` (another class or split); add the rest."""
    kept = []
    for path, label in samples:
        real = os.path.realpath(path)
        if real in taken:
            log.warning(f"skipped {path}: the same file as one already listed ({real})")
            continue
        taken.add(real)
        kept.append((path, label))
    return kept


def scan_split(
    directory: Path,
    class_names: list[str] | None = None,
    max_per_class: int | None = None,
    taken: set[str] | None = None,
) -> tuple[list[str], ImageFiles]:
    """Class names and files of one `<class>/<image>` tree (the first `max_per_class` of each).

    A file already in `taken` (real paths of the splits scanned before) is left out, so no image
    is in two splits.
    """
    names = class_folders(directory)
    if not names:
        raise UserError(f"no class folders in {directory}; {LAYOUT}")
    if class_names is not None and names != class_names:
        raise UserError(
            f"the class folders of {directory} differ from those of train/; {LAYOUT} "
            "with the same class folder names in every split"
        )
    samples: list[tuple[str, int]] = []
    ignored: list[str] = []
    for label, name in enumerate(names):
        files = image_files(directory / name, ignored)
        if not files:
            raise UserError(f"class folder {directory / name} is empty (no image files); {LAYOUT}")
        samples += [(path, label) for path in files[: max_per_class or None]]
    report_ignored(ignored)
    samples = unique_files(samples, set() if taken is None else taken)
    paths = [path for path, _ in samples]
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return names, ImageFiles(paths, labels)


def stratified_split(files: ImageFiles, fraction: float) -> tuple[ImageFiles, ImageFiles]:
    """A fixed stratified train/val split of one split's files."""
    hint = "add images, change data.val_fraction, or add a val/ folder"
    train, val = (
        rows.sort().values.tolist() for rows in holdout_split(files.labels, fraction, hint)
    )
    pick = lambda rows: ImageFiles([files.paths[i] for i in rows], files.labels[rows])  # noqa: E731
    return pick(train), pick(val)


def split_folders(root: Path) -> set[str]:
    """The splits `root` holds when its visible folders are `train` and optionally `val` and
    `test`, and nothing else; else an empty set: every visible folder is a class, `train` too."""
    folders = set(class_folders(root))
    return folders if "train" in folders and folders <= set(SPLITS) else set()


def scan_folder(
    root: str | None, val_fraction: float, max_per_class: int | None = None
) -> FileDataset:
    """Find train/val/test under `root`; hold out a stratified val split when there is no val/.

    `max_per_class` keeps the first files of each class in the training tree (a quick subset).
    """
    if not root:
        raise UserError(f"data.root is required for this dataset; {LAYOUT}")
    base = Path(root).expanduser()
    if is_system_path(os.path.realpath(base)):
        raise UserError(f"data.root={root} is a system folder, not an image folder; {LAYOUT}")
    if not base.is_dir():
        raise UserError(f"data.root={root} is not a directory; {LAYOUT}")
    present = split_folders(base)
    train_dir = base / "train" if present else base
    taken: set[str] = set()
    names, train = scan_split(train_dir, max_per_class=max_per_class, taken=taken)
    splits: dict[str, ImageFiles] = {}
    if "val" in present:
        splits["train"], splits["val"] = train, scan_split(base / "val", names, taken=taken)[1]
    else:
        splits["train"], splits["val"] = stratified_split(train, val_fraction)
    if "test" in present:
        splits["test"] = scan_split(base / "test", names, taken=taken)[1]
    return FileDataset(splits, names, native_size=0)


@register_dataset("folder")
@register_dataset("cifar10_folder")
def load_folder_dataset(cfg: DictConfig) -> FileDataset:
    """Any ImageFolder tree; `data.root` points at it."""
    return scan_folder(cfg.root, cfg.val_fraction, cfg.max_per_class)
