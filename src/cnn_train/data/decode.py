"""Find image files (`image_files`) and read them as uint8 RGB tensors [3, H, W], whatever their
format and mode: one at a time, or a whole split at once on a thread pool.

Image files are untrusted, and every decoded image passes here, so the bounds are kept here:
only regular files are opened (never a FIFO, a device or anything under /dev, /proc, /sys), at
most MAX_FILE_BYTES are read, the header's size is checked before any pixel is decoded (at most
MAX_PIXELS pixels, at most MAX_ASPECT_RATIO:1, so a preset's resize of the short side makes at
most MAX_ASPECT_RATIO times a square image's pixels), and 16- and 32-bit modes are scaled to 8
bits by their range instead of clipped. Anything else is a BadImageError: skipped and counted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor, resize
from tqdm import tqdm

from cnn_train.errors import UserError

log = logging.getLogger(__name__)
JPEG_MAGIC = b"\xff\xd8\xff"
CHUNK = 64  # files per pool task: enough to hide the pool's overhead on small images
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
)
MAX_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit (~ 9459 x 9459)
MAX_ASPECT_RATIO = 20  # long side / short side
MAX_FILE_BYTES = 512 * 2**20
SYSTEM_FOLDERS = ("/dev", "/proc", "/sys")
BROKEN = "a broken link"
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class BadImageError(Exception):
    """The file is not a readable image (corrupt, truncated, empty or another kind of file)."""


def is_image_name(name: str) -> bool:
    """A visible file name with an image extension (case-insensitive)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_system_path(real: str) -> bool:
    """Whether a resolved path lies in /dev, /proc or /sys (devices and kernel files)."""
    return any(real == top or real.startswith(top + os.sep) for top in SYSTEM_FOLDERS)


def regular_file(path: str) -> tuple[str, os.stat_result]:
    """The resolved path and status of `path`, a regular file outside /dev, /proc and /sys.

    Checked with `os.stat` before anything opens it: a FIFO would block `open`, a device
    (`/dev/zero`) would never end. Raises BadImageError otherwise (OSError if it is missing).
    """
    real = os.path.realpath(path)
    if is_system_path(real):
        raise BadImageError(f"a system file ({real}), not an image file")
    status = os.stat(real)
    if not stat.S_ISREG(status.st_mode):
        raise BadImageError("not a regular file (a FIFO, device, socket or folder)")
    return real, status


def check_size(width: int, height: int) -> None:
    """Refuse a header size of no pixels, over MAX_PIXELS, or longer than MAX_ASPECT_RATIO:1."""
    if width < 1 or height < 1:
        raise BadImageError(f"{width}x{height} pixels: no image")
    if width * height > MAX_PIXELS:
        raise BadImageError(f"{width}x{height} pixels, more than {MAX_PIXELS:,}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadImageError(f"{width}x{height} pixels, an aspect ratio over {MAX_ASPECT_RATIO}:1")


@contextlib.contextmanager
def _jpeg_warnings_as_errors() -> Iterator[None]:
    # The filters are process-wide: enter this once around all decoding threads, never per thread
    # (nested enters and exits from several threads would leave the filters changed).
    with warnings.catch_warnings():
        # libjpeg reports a truncated file as a warning ("premature end of data"): treat as bad.
        # Only torch's and torchvision's: Pillow's warnings are about images it still decodes.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("error", category=UserWarning, module="torch")
        yield


def read_rgb(path: str) -> torch.Tensor:
    """Decode `path` to uint8 RGB [3, H, W]: libjpeg-turbo for JPEG, Pillow for everything else."""
    with _jpeg_warnings_as_errors():
        return _read_rgb(path)


def _read_bytes(path: str) -> bytes:
    real, status = regular_file(path)
    if status.st_size == 0:
        raise BadImageError("empty file")
    if status.st_size > MAX_FILE_BYTES:
        raise BadImageError(f"{status.st_size:,} bytes, more than {MAX_FILE_BYTES:,}")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    with open(os.open(real, flags), "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):  # swapped since the check
            raise BadImageError("not a regular file (a FIFO, device, socket or folder)")
        data = file.read(MAX_FILE_BYTES + 1)
    if not data:
        raise BadImageError("empty file")
    if len(data) > MAX_FILE_BYTES:
        raise BadImageError(f"more than {MAX_FILE_BYTES:,} bytes")
    return data


def _read_rgb(path: str) -> torch.Tensor:
    data = _read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            check_size(*image.size)
            if data.startswith(JPEG_MAGIC):
                try:
                    return _decode_jpeg(data)
                except (RuntimeError, BadImageError):
                    pass  # CMYK or unusual JPEGs that libjpeg-turbo's tensor path refuses
            return image_to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise BadImageError(str(error) or type(error).__name__) from error


def _decode_jpeg(data: bytes) -> torch.Tensor:
    try:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return decode_jpeg(buffer, mode=ImageReadMode.RGB)
    except UserWarning as warning:
        raise BadImageError(str(warning)) from warning


def image_to_rgb(image: Image.Image) -> torch.Tensor:
    """A Pillow image (size checked, then decoded) as uint8 RGB [3, H, W], in any mode.

    16- and 32-bit modes are scaled to 8 bits by their range (see `_wide_to_8_bits`).
    """
    check_size(*image.size)
    image.load()
    if image.mode in WIDE_MODES:
        grey = torch.from_numpy(_wide_to_8_bits(np.asarray(image), image.mode))
        return grey.unsqueeze(0).repeat(3, 1, 1)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # what Pillow asks for before dropping the alpha
    return pil_to_tensor(image.convert("RGB"))


def _wide_to_8_bits(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit modes: 0..65535 -> 0..255. 32-bit integer (I) and float (F): values within 0..255
    are kept, integers within 0..65535 are 16-bit data, floats within 0..1 are fractions, and any
    other range is stretched from its minimum to its maximum. Non-finite floats become 0."""
    if mode.startswith("I;16"):
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    values = values.astype(np.float32)
    if mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low >= 0 and high <= 1 and mode == "F":
        scale, offset = 255.0, 0.0
    elif low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif low >= 0 and high <= 65535 and mode == "I":
        scale, offset = 255.0 / 65535.0, 0.0
    else:
        scale, offset = 255.0 / ((high - low) or 1.0), low
    return np.clip(np.rint((values - offset) * scale), 0, 255).astype(np.uint8)


def image_files(top: str | Path, ignored: list[str] | None = None) -> list[str]:
    """The image files under `top`, each real file once, in a fixed order (a folder's files,
    sorted, then its subfolders' in sorted order).

    Only visible regular files with an image extension count: hidden files and folders
    (`.ipynb_checkpoints/`, `.thumbs/`) are left out at every level, other names are ignored, and
    a FIFO, socket or device is skipped with a warning, never opened. Symlinks are followed, but
    never into /dev, /proc or /sys, and a link back into a folder already walked
    (`ln -s . cat/self`) is skipped with a warning instead of listing every file again. Visible
    files without an image extension are added to `ignored` (see `report_ignored`).
    """
    if is_system_path(os.path.realpath(top)):
        raise UserError(f"{top} is a system folder, not a folder of images")
    files: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    pending = [str(top)]
    while pending:
        folder = pending.pop()
        try:
            status = os.stat(folder)
        except OSError as error:
            _unreadable(error)
        if (status.st_dev, status.st_ino) in seen_dirs:
            log.warning(f"skipped {folder}: a link back into a folder already read")
            continue
        seen_dirs.add((status.st_dev, status.st_ino))
        names, subfolders = folder_entries(folder, ignored)
        files += names
        pending += reversed(subfolders)  # depth first, in sorted order
    return files


def folder_entries(folder: str, ignored: list[str] | None = None) -> tuple[list[str], list[str]]:
    """The image files and the subfolders directly in `folder`, sorted by name."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        _unreadable(error)
    files, subfolders = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        kind = _kind(entry)
        if kind == "folder":
            subfolders.append(entry.path)
        elif kind == "file":
            if is_image_name(entry.name):
                files.append(entry.path)
            elif ignored is not None:
                ignored.append(entry.path)
        elif kind != BROKEN or is_image_name(entry.name):
            log.warning(f"skipped {entry.path}: {kind}, not an image file")
    return files, subfolders


def _kind(entry: os.DirEntry) -> str:
    """`file` (regular), `folder`, or why the entry is neither; links are resolved first."""
    try:
        if entry.is_symlink():
            real = os.path.realpath(entry.path)
            if is_system_path(real):
                return f"a link into {real}"
            mode = os.stat(real).st_mode
        else:
            mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return BROKEN  # a dangling link, or one that loops
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    return "a FIFO, socket or device"


def report_ignored(ignored: list[str], shown: int = 5) -> None:
    """Name the visible files left out for their extension (notes, annotations): a few, and
    how many more. They are not images, so they do not count as unreadable."""
    for path in ignored[:shown]:
        log.warning(f"ignored {path}: not an image file name ({', '.join(IMAGE_SUFFIXES)})")
    if len(ignored) > shown:
        log.warning(f"ignored {len(ignored) - shown} more files without an image extension")


def _unreadable(error: OSError) -> NoReturn:
    raise UserError(
        f"cannot read {error.filename} ({error.strerror}); fix its permissions or move it out of "
        "data.root"
    )


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
