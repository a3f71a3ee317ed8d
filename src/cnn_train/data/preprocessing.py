"""The one evaluation preprocessing: the record every checkpoint stores under `preprocessing`, and
the transform that validation, `cnn-eval`, `cnn-predict` and `cnn-export` all feed the model with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import torch
from torchvision.transforms.v2 import functional as tvf

from cnn_train.data.transforms import Normalize
from cnn_train.errors import UserError

CENTRE_CROP_PRESETS = ("imagenet", "alexnet2012")


@dataclass(frozen=True)
class EvalPreprocessing:
    """uint8 images -> the model's normalized float input [.., 3, S, S], one way for every path.

    The fields are the checkpoint's record: a new evaluation setting is one field with a default
    (the value that checkpoints written before it get).
    """

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3  # of the dataset's images: 1 for grey in-memory sets (repeated to 3)
    resize_short_side: int | None = None  # resize the short side, then centre-crop; else squash

    def __post_init__(self) -> None:
        # Records hold lists; a frozen value holds tuples, so equal settings compare equal.
        object.__setattr__(self, "mean", tuple(float(value) for value in self.mean))
        object.__setattr__(self, "std", tuple(float(value) for value in self.std))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EvalPreprocessing:
        """Read a checkpoint's `preprocessing` record (missing settings take their defaults)."""
        unknown = sorted(set(record) - {item.name for item in fields(cls)})
        if unknown:
            raise UserError(
                f"the checkpoint's preprocessing has {', '.join(unknown)}, which this version of "
                "cnn-train does not know; use the version that wrote the checkpoint"
            )
        missing = [item.name for item in fields(cls) if item.default is MISSING]
        missing = [name for name in missing if name not in record]
        if missing:
            raise UserError(f"the checkpoint's preprocessing lacks {', '.join(missing)}")
        return cls(**record)

    def to_record(self) -> dict[str, Any]:
        """The record a checkpoint stores: plain numbers, strings and lists."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One image of the model's input: [3, S, S]."""
        return (3, self.image_size, self.image_size)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [.., C, H, W] -> uint8 [.., C, S, S] (antialiased bilinear, as the loaders do).

        Each image comes out the same alone or in a batch, with 1 channel or repeated to 3.
        """
        side = [self.image_size, self.image_size]
        if self.resize_short_side is None:
            return tvf.resize(images, side, antialias=True)
        return tvf.center_crop(tvf.resize(images, [self.resize_short_side], antialias=True), side)

    def normalizer(self, device: torch.device) -> Normalize:
        """Batches [B, C, S, S] of uint8 -> normalized float32 on `device`, C channels kept."""
        return Normalize(self.mean, self.std, device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [C, H, W] or [B, C, H, W] (C 1 or 3) -> the model's float input [.., 3, S, S]."""
        batch = images if images.dim() == 4 else images.unsqueeze(0)
        inputs = self.normalizer(images.device)(self.resize(batch)).expand(-1, 3, -1, -1)
        return inputs if images.dim() == 4 else inputs[0]

    def from_rgb(self, image: torch.Tensor) -> torch.Tensor:
        """A decoded uint8 RGB image [3, H, W] with the channels the dataset's images have.

        Grey datasets get Pillow's luma (its `convert("L")`, exact on grey pixels).
        """
        if self.channels == 3 or image.shape[-3] == 1:
            return image
        red, green, blue = image.int().unbind(-3)
        luma = (red * 19595 + green * 38470 + blue * 7471 + 0x8000) >> 16
        return luma.to(torch.uint8).unsqueeze(-3)


def dataset_channels(dataset: Any) -> int:
    """The channels a dataset's images have: 1 for grey in-memory sets, else 3 (decoded as RGB)."""
    splits = getattr(dataset, "splits", {})
    images = getattr(splits.get("train"), "images", None)
    return int(images.shape[1]) if isinstance(images, torch.Tensor) else 3


def eval_preprocessing(dataset: Any, image_size: int, augment: str = "none") -> EvalPreprocessing:
    """The evaluation input of a dataset trained at `image_size` with the `augment` preset.

    The ImageNet-style presets evaluate on a centre crop of an image whose short side was
    resized to 256/224 of the crop (256 for 224); the others resize the whole image.
    """
    short_side = round(image_size * 256 / 224) if augment in CENTRE_CROP_PRESETS else None
    return EvalPreprocessing(
        image_size=image_size,
        mean=tuple(dataset.mean),
        std=tuple(dataset.std),
        channels=dataset_channels(dataset),
        resize_short_side=short_side,
    )
