"""Read image files as uint8 RGB tensors [3, H, W], whatever their format and mode: one at a
time, or a whole split at once on a thread pool."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor, resize
from tqdm import tqdm

from cnn_train.errors import UserError

JPEG_MAGIC = b"\xff\xd8\xff"
CHUNK = 64  # files per pool task: enough to hide the pool's overhead on small images


class BadImageError(Exception):
    """The file is not a readable image (corrupt, truncated, empty or another kind of file)."""


@contextlib.contextmanager
def _jpeg_warnings_as_errors() -> Iterator[None]:
    # The filters are process-wide: enter this once around all decoding threads, never per thread
    # (nested enters and exits from several threads would leave the filters changed).
    with warnings.catch_warnings():
        # libjpeg reports a truncated file as a warning ("premature end of data"): treat as bad.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("error", UserWarning)
        yield


def read_rgb(path: str) -> torch.Tensor:
    """Decode `path` to uint8 RGB [3, H, W]: libjpeg-turbo for JPEG, Pillow for everything else."""
    with _jpeg_warnings_as_errors():
        return _read_rgb(path)


def _read_rgb(path: str) -> torch.Tensor:
    with open(path, "rb") as file:
        data = file.read()
    if not data:
        raise BadImageError("empty file")
    if data.startswith(JPEG_MAGIC):
        try:
            return _decode_jpeg(data)
        except (RuntimeError, BadImageError):
            pass  # CMYK or unusual JPEGs that libjpeg-turbo's tensor path refuses: try Pillow
    return _decode_pil(data)


def _decode_jpeg(data: bytes) -> torch.Tensor:
    try:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return decode_jpeg(buffer, mode=ImageReadMode.RGB)
    except UserWarning as warning:
        raise BadImageError(str(warning)) from warning


def _decode_pil(data: bytes) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return pil_to_tensor(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise BadImageError(str(error) or type(error).__name__) from error


def decode_files(
    paths: list[str], size: int, *, threads: int, desc: str
) -> tuple[torch.Tensor, dict[int, str]]:
    """Decode every file once at size x size on a thread pool, with a progress bar.

    The images are resized as the `none` and `cifar` presets resize them (antialiased), so they
    equal what the per-image path yields. Returns uint8 [N, 3, size, size] (zeros where a file
    failed) and {index: "<path> (<reason>)"} for the files that are not readable images.
    """
    images = torch.zeros(len(paths), 3, size, size, dtype=torch.uint8)
    failures: dict[int, str] = {}

    def load(chunk: range) -> int:
        for index in chunk:
            try:
                images[index] = resize(_read_rgb(paths[index]), [size, size], antialias=True)
            except (BadImageError, OSError) as error:
                failures[index] = f"{paths[index]} ({error})"
        return len(chunk)

    chunks = [range(start, min(start + CHUNK, len(paths))) for start in range(0, len(paths), CHUNK)]
    bar = tqdm(
        total=len(paths), desc=desc, unit="img", leave=False, dynamic_ncols=True, disable=None
    )
    with bar, _jpeg_warnings_as_errors(), ThreadPoolExecutor(max(1, threads)) as pool:
        for done in pool.map(load, chunks):
            bar.update(done)
    return images, dict(sorted(failures.items()))


def too_many_bad_files(bad: int, total: int, max_bad_fraction: float) -> UserError | None:
    """The error to stop with when more than `max_bad_fraction` of `total` files failed."""
    if bad <= max_bad_fraction * total:
        return None
    return UserError(
        f"{bad} of {total} image files could not be read, more than "
        f"data.max_bad_fraction={max_bad_fraction:g}; fix or remove them (the log names each "
        "one), or raise data.max_bad_fraction"
    )
