"""Untrusted images are bounded: only visible regular image files are read, their size is checked
before they are decoded, wide modes are scaled, and a hostile folder of any make-up loads, or
stops in one line, in bounded time and memory (a property-based test with Hypothesis)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import cnn_train.data.decode as decode_module
from cnn_train.data import load_dataset, make_loader
from cnn_train.data.decode import IMAGE_SUFFIXES, MAX_ASPECT_RATIO, MAX_PIXELS, read_rgb
from cnn_train.data.folder import scan_folder
from cnn_train.data.preprocessing import EvalPreprocessing
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.predict import predict
from tests.helpers import QUICK, compose_config, write_image, write_tree

CPU = torch.device("cpu")
SECONDS_PER_EXAMPLE = 30


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """best.pt of a quick run on synthetic 8 px images (3 classes)."""
    run_dir = tmp_path_factory.mktemp("run")
    run_training(compose_config("train", [*QUICK, "data.num_classes=3"]), run_dir)
    return str(run_dir / "checkpoints" / "best.pt")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in this (main) thread after `seconds`: a blocked open() is interrupted."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def bounded_decoding() -> Iterator[list[str]]:
    """Check every image the decoder returns: a regular file, bounded pixels and aspect ratio."""
    read, opened = decode_module._read_rgb, []

    def checked(path: str) -> torch.Tensor:
        opened.append(path)
        image = read(path)
        height, width = image.shape[-2:]
        assert stat.S_ISREG(os.stat(path).st_mode), path
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert height * width <= MAX_PIXELS and max(height, width) <= MAX_ASPECT_RATIO * min(
            height, width
        )
        return image

    with mock.patch.object(decode_module, "_read_rgb", checked):
        yield opened


def folder_cfg(root: Path, *overrides: str):
    return compose_config(
        "train",
        [
            "data=folder",
            f"data.root={root}",
            "data.image_size=8",
            "data.val_fraction=0.5",
            "data.num_workers=0",
            "device=cpu",
            *overrides,
        ],
    ).data


def one_line(error: UserError) -> str:
    text = str(error)
    assert text and "\n" not in text, text
    return text


# --- decoding ---------------------------------------------------------------------------------


def test_a_16_bit_grey_png_keeps_its_brightness(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(20000, 48000, (32, 32), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I;16")
    decoded = read_rgb(str(tmp_path / "grey16.png")).float()
    assert decoded.mean().item() == pytest.approx(values.mean() / 257, abs=0.5)  # not 255: white
    assert torch.equal(decoded[0], decoded[1])


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I", np.full((4, 4), 30000, dtype=np.int32), round(30000 / 257)),
        ("I", np.full((4, 4), 200, dtype=np.int32), 200),
        ("F", np.full((4, 4), 0.5, dtype=np.float32), 128),
        ("F", np.full((4, 4), 100.0, dtype=np.float32), 100),
    ],
)
def test_32_bit_modes_are_scaled_by_their_range(tmp_path, mode, values, expected) -> None:
    Image.fromarray(values, mode=mode).save(tmp_path / "wide.tif")
    decoded = read_rgb(str(tmp_path / "wide.tif"))
    assert decoded.shape == (3, 4, 4) and int(decoded[0, 0, 0]) == expected


def test_a_float_image_with_nan_and_a_wide_range_is_stretched(tmp_path: Path) -> None:
    values = np.array([[-1000.0, 0.0], [1000.0, np.nan]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "wide.tif")
    assert read_rgb(str(tmp_path / "wide.tif"))[0].tolist() == [[0, 128], [255, 128]]


def test_a_palette_image_with_transparency_decodes(tmp_path: Path) -> None:
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).quantize(4)
    image.info["transparency"] = b"\x00" * 4
    image.save(tmp_path / "p.png")
    with time_limit(10):
        assert read_rgb(str(tmp_path / "p.png")).shape == (3, 4, 4)


@pytest.mark.parametrize(
    "make",
    [
        lambda path: os.mkfifo(path),
        lambda path: path.symlink_to("/dev/zero"),
        lambda path: path.symlink_to("/proc/self/environ"),
        lambda path: Image.new("L", (1, 3_000_000)).save(path, format="PNG"),
        lambda path: Image.new("L", (3_000_000, 1)).save(path, format="PNG"),
        lambda path: path.write_bytes(b""),
    ],
    ids=["fifo", "dev-zero", "proc", "1x3M", "3Mx1", "empty"],
)
def test_hostile_files_are_refused_without_opening_or_decoding(tmp_path: Path, make) -> None:
    path = tmp_path / "x.png"
    make(path)
    with time_limit(10), pytest.raises(decode_module.BadImageError):
        read_rgb(str(path))


def test_a_header_over_the_pixel_bound_is_refused_before_decoding(tmp_path: Path) -> None:
    Image.new("1", (10_000, 9_000)).save(tmp_path / "big.png")  # 90 Mpx, a few KB
    decoding = mock.patch.object(Image.Image, "load", side_effect=AssertionError("decoded"))
    with decoding, pytest.raises(decode_module.BadImageError, match="more than 89,478,485"):
        read_rgb(str(tmp_path / "big.png"))


def test_checkpoint_preprocessing_records_are_bounded() -> None:
    good = {"image_size": 8, "mean": [0.5], "std": [0.25], "channels": 1}
    EvalPreprocessing.from_record(good)
    for change in (
        {"image_size": 100_000},
        {"image_size": 0},
        {"image_size": True},
        {"mean": [float("nan")]},
        {"std": [0.0]},
        {"std": ["x"]},
        {"channels": 2},
        {"mean": [0.5, 0.5], "std": [0.2]},
        {"resize_short_side": 10**9},
    ):
        with pytest.raises(UserError, match="the checkpoint's preprocessing must have") as raised:
            EvalPreprocessing.from_record({**good, **change})
        one_line(raised.value)


# --- folder layouts ---------------------------------------------------------------------------


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


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=QUIET)
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
