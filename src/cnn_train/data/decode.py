"""Read one image file as a uint8 RGB tensor [3, H, W], whatever its format and mode."""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor

JPEG_MAGIC = b"\xff\xd8\xff"


class BadImageError(Exception):
    """The file is not a readable image (corrupt, truncated, empty or another kind of file)."""


def read_rgb(path: str) -> torch.Tensor:
    """Decode `path` to uint8 RGB [3, H, W]: libjpeg-turbo for JPEG, Pillow for everything else."""
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
    with warnings.catch_warnings():
        # libjpeg reports a truncated file as a warning ("premature end of data"): treat as bad.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("error", UserWarning)
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
