"""ILSVRC-2012: class folders on disk, or the official archives unpacked by torchvision."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from torchvision.datasets import ImageNet

from cnn_train.data.folder import FileDataset, scan_folder
from cnn_train.data.registry import register_dataset
from cnn_train.errors import UserError

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
        for split in ("train", "val"):
            try:
                ImageNet(str(root), split=split)  # unpacks the archive into <root>/<split>/<wnid>/
            except (RuntimeError, OSError) as error:
                raise UserError(
                    f"could not unpack ImageNet in data.root={root}: {error}"
                ) from error
    return scan_folder(str(root), cfg.val_fraction, cfg.max_per_class)
