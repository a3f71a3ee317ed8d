"""Only visible regular image files of an untrusted folder are read: hidden files and folders
are neither classes nor images, the split layout holds only split folders, FIFOs, devices and
links out are skipped without blocking, and a system folder is not a data root."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from cnn_train.data.folder import scan_folder
from cnn_train.errors import UserError
from tests.helpers import write_image, write_tree
from tests.helpers.untrusted_input import time_limit


def test_hidden_folders_are_neither_classes_nor_images(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_tree(root, classes=("cat", "dog"), per_class=4)
    write_tree(root / ".ipynb_checkpoints", classes=("cat",), per_class=2)
    write_tree(root / "cat" / ".thumbs", classes=("small",), per_class=2)
    write_image(root / "dog" / ".hidden.png", "RGB", seed=9)
    dataset = scan_folder(str(root), val_fraction=0.5)
    assert dataset.class_names == ["cat", "dog"]
    paths = dataset.splits["train"].paths + dataset.splits["val"].paths
    assert len(paths) == 8 and not any("/." in path for path in paths)


def test_a_class_named_train_in_a_flat_layout_is_a_class(tmp_path: Path) -> None:
    root = tmp_path / "vehicles"
    write_tree(root, classes=("bus", "car", "train"), per_class=4)
    dataset = scan_folder(str(root), val_fraction=0.5)
    assert dataset.class_names == ["bus", "car", "train"]
    assert sum(len(split) for split in dataset.splits.values()) == 12


def test_the_split_layout_holds_only_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "splits"
    write_tree(root / "train", classes=("a", "b"), per_class=4)
    write_tree(root / "val", classes=("a", "b"), per_class=2)
    (root / "README.txt").write_text("files beside the splits are fine\n")
    write_tree(root / ".cache", classes=("a",), per_class=1)  # hidden: not a folder of root
    dataset = scan_folder(str(root), val_fraction=0.5)
    assert dataset.class_names == ["a", "b"]
    assert (len(dataset.splits["train"]), len(dataset.splits["val"])) == (8, 4)


def test_fifos_devices_and_links_out_are_skipped_without_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "images"
    write_tree(root, classes=("cat", "dog"), per_class=4)
    os.mkfifo(root / "cat" / "fifo.jpg")
    (root / "cat" / "zero.jpg").symlink_to("/dev/zero")
    (root / "dog" / "dev").symlink_to("/dev", target_is_directory=True)
    (root / "dog" / "proc").symlink_to("/proc", target_is_directory=True)
    (root / "proc").symlink_to("/proc/self", target_is_directory=True)
    with time_limit(20), caplog.at_level(logging.WARNING):
        dataset = scan_folder(str(root), val_fraction=0.5)
    assert dataset.class_names == ["cat", "dog"]
    paths = dataset.splits["train"].paths + dataset.splits["val"].paths
    assert len(paths) == 8 and all(stat.S_ISREG(os.stat(path).st_mode) for path in paths)
    assert "fifo.jpg: a FIFO, socket or device" in caplog.text
    assert "zero.jpg: a link into /dev/zero" in caplog.text


def test_a_system_folder_is_not_a_data_root() -> None:
    with pytest.raises(UserError, match="is a system folder"):
        scan_folder("/proc", val_fraction=0.5)
