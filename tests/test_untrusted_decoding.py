"""Untrusted image files are decoded within bounds: wide modes (16-bit, 32-bit, float) are
scaled by their range, FIFOs, devices, system files and headers over the pixel or aspect-ratio
bound are refused before they are opened or decoded, and a checkpoint's preprocessing record is
bounded too."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

import cnn_train.data.decode as decode_module
from cnn_train.data.decode import read_rgb
from cnn_train.data.preprocessing import EvalPreprocessing
from cnn_train.errors import UserError
from tests.helpers.untrusted_input import one_line, time_limit


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
