"""Guards for the untrusted-input tests: a time limit that interrupts a blocked open(), a check
of every image the decoder returns (a regular file, bounded pixels and aspect ratio), a folder
dataset's config, and the one-line check of a refusal."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch

import cnn_train.data.decode as decode_module
from cnn_train.data.decode import MAX_ASPECT_RATIO, MAX_PIXELS
from cnn_train.errors import UserError
from tests.helpers import compose_config

CPU = torch.device("cpu")


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
