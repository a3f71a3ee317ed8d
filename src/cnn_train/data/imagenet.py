"""ILSVRC-2012: class folders on disk (read as `folder.scan_folder` reads any folder, with its
bounds), or the official archives unpacked by torchvision."""

from __future__ import annotations

import tarfile
from pathlib import Path

from omegaconf import DictConfig
from torchvision.datasets import ImageNet

from cnn_train.data.folder import FileDataset, scan_folder
from cnn_train.data.registry import register_dataset
from cnn_train.errors import UserError, first_line

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


@register_dataset("imagenet")
def load_imagenet_dataset(cfg: DictConfig) -> FileDataset:
    """`data.root` with train/<wnid>/* and val/<wnid>/*, or with the three official archives."""
    if not cfg.root:
        raise UserError(
            "data.root is required for imagenet: a folder with train/<wnid>/*.JPEG and "
            f"val/<wnid>/*.JPEG, or with {DEVKIT} and {' and '.join(ARCHIVES)}"
        )
    root = Path(cfg.root).expanduser()
    if not (root / "train").is_dir() and (root / DEVKIT).is_file():
        unpack_archives(root)
    return scan_folder(str(root), cfg.val_fraction, cfg.max_per_class)


def unpack_archives(root: Path) -> None:
    """Unpack the official archives into <root>/<split>/<wnid>/ with torchvision.

    The archives are untrusted: tarfile's `data` filter refuses members that would land outside
    root (absolute paths, `..`, links out of it), devices and FIFOs, and unsafe permissions.
    """
    previous = tarfile.TarFile.extraction_filter
    tarfile.TarFile.extraction_filter = staticmethod(tarfile.data_filter)
    try:
        for split in ("train", "val"):
            ImageNet(str(root), split=split)
    except (RuntimeError, OSError, tarfile.TarError) as error:
        raise UserError(
            f"could not unpack ImageNet in data.root={root}: {first_line(error, 'bad archive')}"
        ) from error
    finally:
        tarfile.TarFile.extraction_filter = previous
