"""A hostile image folder, loaded for training, validation and predict: its odd files are
skipped, and a folder of any make-up loads, or stops in one line, in bounded time and memory (a
property-based test with Hypothesis)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnn_train.data import load_dataset, make_loader
from cnn_train.data.decode import IMAGE_SUFFIXES
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.predict import predict
from tests.helpers import QUICK, compose_config, write_image, write_tree
from tests.helpers.untrusted_input import CPU, bounded_decoding, folder_cfg, one_line, time_limit

SECONDS_PER_EXAMPLE = 30


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """best.pt of a quick run on synthetic 8 px images (3 classes)."""
    run_dir = tmp_path_factory.mktemp("run")
    run_training(compose_config("train", [*QUICK, "data.num_classes=3"]), run_dir)
    return str(run_dir / "checkpoints" / "best.pt")


def test_validation_and_predict_skip_a_one_by_three_million_strip(
    tmp_path: Path, checkpoint: str
) -> None:
    root = tmp_path / "images"
    write_tree(root, classes=("cat", "dog"), per_class=4)
    Image.new("L", (1, 3_000_000)).save(root / "cat" / "strip.png")
    assert (root / "cat" / "strip.png").stat().st_size < 10_000
    dataset = load_dataset(folder_cfg(root, "data.augment=imagenet"))
    split = next(
        name for name in ("train", "val") if any("strip" in p for p in dataset.splits[name].paths)
    )
    loader = make_loader(
        dataset, split, image_size=8, batch_size=4, device=CPU, train=False,
        augment="imagenet", max_bad_fraction=0.5,
    )  # fmt: skip
    with bounded_decoding(), time_limit(20):
        samples = sum(len(labels) for _, labels in loader)
    assert loader.skipped_files == 1 and samples == len(dataset.splits[split]) - 1
    with bounded_decoding(), time_limit(20):
        results = predict(checkpoint, str(root))
    strip = next(result for result in results if result["image"].endswith("strip.png"))
    assert "aspect ratio" in strip["skipped"]
    assert sum("top" in result for result in results) == 8


def test_predict_reports_a_fifo_and_a_device_it_was_given(tmp_path: Path, checkpoint: str) -> None:
    write_image(tmp_path / "good.png", "RGB", seed=1)
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    names = [str(tmp_path / name) for name in ("good.png", "fifo.png", "zero.png")]
    with time_limit(20):
        results = predict(checkpoint, names)
    assert "top" in results[0]
    assert "not a regular file" in results[1]["skipped"]
    assert "system file" in results[2]["skipped"]


# --- the property: any hostile folder loads, or stops in one line ----------------------------

# mode -> file formats Pillow writes it in
FORMATS = {
    "RGB": ("png", "jpg", "bmp", "gif", "webp", "tif"),
    "L": ("png", "jpg", "tif"),
    "P": ("png", "gif"),
    "RGBA": ("png", "tif"),
    "CMYK": ("jpg", "tif"),
    "1": ("png", "bmp"),
    "LA": ("png",),
    "I;16": ("png", "tif"),
    "I": ("tif",),
    "F": ("tif",),
}
SIZES = [(1, 1), (1, 40), (40, 1), (3, 5), (16, 16), (37, 23), (1, 3000), (2000, 2)]
KINDS = ("image", "fifo", "dev_zero", "proc", "dev_folder", "empty", "truncated", "text_as_jpg",
         "png_as_txt", "dangling", "loop")  # fmt: skip
PLACES = ("class", "nested", "hidden_file", "hidden_folder", "hidden_nested", "root_hidden")

entries = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.sampled_from(PLACES),
        st.sampled_from(sorted(FORMATS)),
        st.integers(0, 5),  # format choice
        st.sampled_from(SIZES),
        st.integers(0, 2**16),  # pixel seed
        st.sampled_from(("a", "b")),
    ),
    max_size=8,
)


def image_bytes(mode: str, fmt: str, size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    width, height = size
    if mode in ("I;16", "I"):
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
        image = image if mode == "I;16" else image.convert("I")
    elif mode == "F":
        image = Image.fromarray(rng.normal(0, 1000, (height, width)).astype(np.float32), "F")
    else:
        rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        image = rgb.quantize(8) if mode == "P" else rgb.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format={"jpg": "JPEG", "tif": "TIFF"}.get(fmt, fmt.upper()))
    return buffer.getvalue()


def write_entry(root: Path, index: int, entry: tuple) -> None:
    kind, place, mode, choice, size, seed, label = entry
    fmt = FORMATS[mode][choice % len(FORMATS[mode])]
    folder = {
        "class": root / label,
        "nested": root / label / "more",
        "hidden_file": root / label,
        "hidden_folder": root / label / ".thumbs",
        "hidden_nested": root / label / ".cache" / "deeper",
        "root_hidden": root / ".ipynb_checkpoints" / label,
    }[place]
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{'.' if place == 'hidden_file' else ''}{kind}{index}"
    path = folder / f"{name}.{fmt}"
    if kind == "image":
        path.write_bytes(image_bytes(mode, fmt, size, seed))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "proc":
        path.symlink_to("/proc/self/environ")
    elif kind == "dev_folder":
        (folder / name).symlink_to("/dev", target_is_directory=True)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(image_bytes(mode, fmt, (16, 16), seed)[:40])
    elif kind == "text_as_jpg":
        (folder / f"{name}.jpg").write_text("not an image\n")
    elif kind == "png_as_txt":
        (folder / f"{name}.txt").write_bytes(image_bytes("RGB", "png", (8, 8), seed))
    elif kind == "dangling":
        path.symlink_to(folder / "nothing-here.png")
    else:  # loop
        (folder / name).symlink_to(folder, target_is_directory=True)


def check_listing(root: Path, paths: list[str]) -> None:
    for path in paths:
        relative = Path(path).relative_to(root)
        assert not any(part.startswith(".") for part in relative.parts), path
        assert Path(path).suffix.lower() in IMAGE_SUFFIXES, path
        assert stat.S_ISREG(os.stat(path).st_mode), path
        assert not os.path.realpath(path).startswith(("/dev/", "/proc/", "/sys/")), path


def load_hostile_folder(root: Path, augment: str, in_memory: str, checkpoint: str) -> None:
    try:
        dataset = load_dataset(
            folder_cfg(root, f"data.augment={augment}", f"data.in_memory={in_memory}")
        )
    except UserError as error:
        event("the dataset was refused in one line")
        one_line(error)
        return
    assert dataset.class_names == ["a", "b", *(["train"] if (root / "train").is_dir() else [])]
    for name, split in dataset.splits.items():
        check_listing(root, split.paths)
        loader = make_loader(
            dataset, name, image_size=8, batch_size=3, device=CPU, train=False,
            augment=augment, in_memory_setting=in_memory, max_bad_fraction=0.9,
        )  # fmt: skip
        try:
            samples = 0
            for images, labels in loader:
                assert images.shape[1:] == (3, 8, 8) and images.dtype == torch.float32
                samples += len(labels)
        except UserError as error:  # more than max_bad_fraction unreadable
            event("a split stopped in one line")
            one_line(error)
            continue
        assert samples + loader.skipped_files == len(split)
    train = make_loader(
        dataset, "train", image_size=8, batch_size=2, device=CPU, train=True,
        augment=augment, in_memory_setting=in_memory, max_bad_fraction=0.9,
    )  # fmt: skip
    with contextlib.suppress(UserError):
        for images, _ in train:
            assert images.shape[1:] == (3, 8, 8)
    try:
        results = predict(checkpoint, str(root))
    except UserError as error:
        event("predict stopped in one line")
        one_line(error)
        return
    check_listing(root, [result["image"] for result in results])
    event(f"predict skipped {sum('skipped' in result for result in results) > 0}")


def hostile_folder_loads_or_stops_in_one_line(checkpoint: str, layout, augment, in_memory):
    base, extra_train_class = layout
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "images"
        write_tree(root, classes=("a", "b"), per_class=4)
        if extra_train_class:
            write_tree(root, classes=("train",), per_class=4)
        for index, entry in enumerate(base):
            write_entry(root, index, entry)
        with bounded_decoding(), time_limit(SECONDS_PER_EXAMPLE):
            load_hostile_folder(root, augment, in_memory, checkpoint)


HOSTILE = {
    "layout": st.tuples(entries, st.booleans()),
    "augment": st.sampled_from(("none", "imagenet", "cifar")),
    "in_memory": st.sampled_from(("auto", "false")),
}
QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=QUIET)
@given(**HOSTILE)
def test_a_hostile_image_folder_loads_or_stops_in_one_line(checkpoint, layout, augment, in_memory):
    hostile_folder_loads_or_stops_in_one_line(checkpoint, layout, augment, in_memory)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=QUIET)
@given(**HOSTILE)
def test_many_hostile_image_folders_load_or_stop_in_one_line(
    checkpoint, layout, augment, in_memory
):
    hostile_folder_loads_or_stops_in_one_line(checkpoint, layout, augment, in_memory)
