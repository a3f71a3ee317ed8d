"""Hostile files and folders, and a full disk: a symlink loop, an unreadable class folder, too few
images per class; whole files written through one writer and appended records whole lines; and
prepare_imagenet_val.py moves only plainly named files and never overwrites one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnn_train.errors import UserError
from tests.helpers import write_image, write_tree


def test_a_symlink_loop_is_skipped_and_no_file_lands_in_two_splits(tmp_path: Path) -> None:
    from cnn_train.data.folder import scan_folder

    root = tmp_path / "images"
    write_tree(root, classes=("a", "b", "c"), per_class=8)
    (root / "a" / "self").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "twin.jpg").symlink_to(root / "c" / "0.jpg")
    dataset = scan_folder(str(root), val_fraction=0.25)
    train, val = dataset.splits["train"].paths, dataset.splits["val"].paths
    real = [os.path.realpath(path) for path in [*train, *val]]
    assert len(real) == len(set(real)) == 24
    assert not any("/self/" in path for path in train + val)


def test_an_unreadable_class_folder_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from cnn_train.data import folder as folder_module

    root = tmp_path / "images"
    write_tree(root, classes=("a", "b"), per_class=4)
    real_scandir = os.scandir

    def locked(path="."):
        if str(path).endswith("/b"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(folder_module.os, "scandir", locked)
    with pytest.raises(UserError, match=r"cannot read .*/b \(Permission denied\)"):
        folder_module.scan_folder(str(root), val_fraction=0.25)


def test_too_few_images_per_class_says_so_in_a_short_line(tmp_path: Path) -> None:
    from cnn_train.data.folder import scan_folder

    root = tmp_path / "images"
    for index in range(300):
        (root / f"class{index:03d}").mkdir(parents=True)
        write_image(root / f"class{index:03d}" / "only.png", "RGB", seed=index, size=(4, 4))
    with pytest.raises(UserError) as raised:
        scan_folder(str(root), val_fraction=0.1)
    message = str(raised.value)
    assert "300 images in 300 classes (the smallest has 1)" in message and len(message) < 400


# --- Whole files through one writer; appended records whole lines -----------------------------


def disk_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_whole_file_write_keeps_the_previous_file(tmp_path: Path) -> None:
    from cnn_train.files import write_atomically, write_text_atomically

    target = tmp_path / "result.json"
    write_text_atomically(target, "old\n")
    with pytest.raises(UserError, match=r"could not write file .*result\.json: No space left"):
        write_atomically(target, lambda handle: handle.write(b"half") and disk_full())
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]
    blocked = tmp_path / "a_file" / "x.json"
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"could not write file .*x\.json: .*a_file is a file"):
        write_text_atomically(blocked, "{}")


def test_a_failed_append_leaves_no_partial_line(tmp_path: Path, monkeypatch) -> None:
    import cnn_train.files as files

    target = tmp_path / "metrics.jsonl"
    files.append_line(target, '{"epoch": 0}')
    real_write, calls = os.write, {"count": 0}

    def half_then_full(descriptor, data):
        calls["count"] += 1
        return real_write(descriptor, data[:5]) if calls["count"] == 1 else disk_full()

    monkeypatch.setattr(files.os, "write", half_then_full)
    with pytest.raises(UserError, match=r"could not append to .*metrics\.jsonl: No space") as hit:
        files.append_line(target, '{"epoch": 1, "val_acc1": 0.5}')
    assert "\n" not in str(hit.value)
    assert target.read_text() == '{"epoch": 0}\n'


def test_a_record_after_a_cut_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    from cnn_train.files import append_line

    target = tmp_path / "metrics.jsonl"
    target.write_text('{"epoch": 0}\n{"epo')  # a writer killed mid-line
    append_line(target, '{"epoch": 1}')
    assert target.read_text().splitlines()[-1] == '{"epoch": 1}'


def test_a_full_disk_while_logging_an_epoch_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import cnn_train.files as files
    from cnn_train.tracking import RunTracker

    tracker = RunTracker(tmp_path)
    tracker.log_epoch({"epoch": 0, "step": 1, "train_loss": 1.0})
    monkeypatch.setattr(files.os, "write", disk_full)
    try:
        with pytest.raises(UserError, match=r"could not append to .*metrics\.jsonl") as raised:
            tracker.log_epoch({"epoch": 1, "step": 2, "train_loss": 0.5})
    finally:
        monkeypatch.undo()
        tracker.close()
    assert "\n" not in str(raised.value)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


# --- prepare_imagenet_val.py: wnids are plain names, nothing is overwritten ----------------------


def _prepare_val(tmp_path: Path, labels: list[str]):
    import runpy

    val = tmp_path / "val"
    val.mkdir()
    for index in range(len(labels)):
        write_image(val / f"ILSVRC2012_val_{index + 1:08d}.JPEG", "RGB", seed=index)
    lines = [f"ILSVRC2012_val_{i + 1:08d}.JPEG {wnid}" for i, wnid in enumerate(labels)]
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "prepare_imagenet_val.py"
    main = runpy.run_path(str(script))["main"]
    return val, lambda: main([str(val), "--labels", str(tmp_path / "labels.txt")])


@pytest.mark.parametrize("wnid", ["../../precious", "..", ".hidden", "a/b", "/abs", "x\x07y"])
def test_a_wnid_that_is_not_a_plain_name_moves_nothing(tmp_path: Path, wnid: str) -> None:
    (tmp_path / "precious").write_text("keep me")
    val, run = _prepare_val(tmp_path, ["n01440764", wnid])
    before = sorted(path.name for path in val.iterdir())
    with pytest.raises(SystemExit, match="not a plain folder name"):
        run()
    assert sorted(path.name for path in val.iterdir()) == before
    assert (tmp_path / "precious").read_text() == "keep me"


def test_prepare_imagenet_val_never_overwrites_a_file(tmp_path: Path) -> None:
    val, run = _prepare_val(tmp_path, ["n01440764", "n01443537"])
    (val / "n01443537").mkdir()
    (val / "n01443537" / "ILSVRC2012_val_00000002.JPEG").write_text("already sorted")
    with pytest.raises(SystemExit, match="already exists"):
        run()
    assert (val / "n01443537" / "ILSVRC2012_val_00000002.JPEG").read_text() == "already sorted"
    assert (val / "ILSVRC2012_val_00000001.JPEG").is_file()
