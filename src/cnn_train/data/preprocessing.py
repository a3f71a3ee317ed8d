"""The one evaluation preprocessing: the record every checkpoint stores under `preprocessing`, and
the transform that validation, `cnn-eval`, `cnn-predict` and `cnn-export` all feed the model with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import torch
from torchvision.transforms.v2 import functional as tvf

from cnn_train.data.policies import INTERPOLATIONS, interpolation_mode
from cnn_train.data.transforms import Normalize
from cnn_train.errors import UserError
from cnn_train.schema import MAX_IMAGE_SIZE

CENTRE_CROP_PRESETS = ("imagenet", "alexnet2012")
TTA_MODES = ("none", "flip", "ten_crop")  # test-time views whose softmax is averaged


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
    interpolation: str = "bilinear"  # of every resize: bilinear or bicubic

    def __post_init__(self) -> None:
        # Records hold lists; a frozen value holds tuples, so equal settings compare equal.
        object.__setattr__(self, "mean", _numbers(self.mean, "mean"))
        object.__setattr__(self, "std", _numbers(self.std, "std"))
        self._check()

    def _check(self) -> None:
        """The bounds a checkpoint's record must keep before anything is allocated from it:
        the command line's image-size limit, 1 or 3 channels, finite mean and std > 0."""
        size, short = self.image_size, self.resize_short_side
        _require(
            _is_int(size) and 1 <= size <= MAX_IMAGE_SIZE,
            f"image_size in [1, {MAX_IMAGE_SIZE}]",
            size,
        )
        _require(
            self.channels in (1, 3) and _is_int(self.channels), "channels 1 or 3", self.channels
        )
        _require(
            short is None or (_is_int(short) and size <= short <= 2 * MAX_IMAGE_SIZE),
            f"resize_short_side null or in [image_size, {2 * MAX_IMAGE_SIZE}]",
            short,
        )
        _require(
            len(self.mean) == len(self.std) and self.channels <= len(self.mean) <= 3,
            "mean and std of one value per channel",
            f"{list(self.mean)}, {list(self.std)}",
        )
        _require(all(value > 0 for value in self.std), "std > 0", list(self.std))
        _require(
            self.interpolation in INTERPOLATIONS,
            f"interpolation one of {', '.join(INTERPOLATIONS)}",
            self.interpolation,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EvalPreprocessing:
        """Read a checkpoint's `preprocessing` record (missing settings take their defaults);
        out-of-bounds values are a one-line UserError (see `_check`)."""
        if not isinstance(record, Mapping):
            raise UserError(
                f"the checkpoint's preprocessing is a {type(record).__name__}, not a dict"
            )
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
        """uint8 [.., C, H, W] -> uint8 [.., C, S, S] (antialiased, in the record's
        interpolation, as the loaders do).

        Each image comes out the same alone or in a batch, with 1 channel or repeated to 3.
        """
        side = [self.image_size, self.image_size]
        if self.resize_short_side is None:
            return self._resized(images, side)
        return tvf.center_crop(self._resized(images, [self.resize_short_side]), side)

    def _resized(self, images: torch.Tensor, size: list[int]) -> torch.Tensor:
        mode = interpolation_mode(self.interpolation)
        return tvf.resize(images, size, interpolation=mode, antialias=True)

    def views(self, image: torch.Tensor, tta: str) -> torch.Tensor:
        """The test-time views of one uint8 image [C, H, W] as uint8 [V, C, S, S].

        `none`: the one evaluation input; `flip`: it and its mirror image; `ten_crop`: the four
        corners and the centre at S px of the image resized as the preset resizes (its short side,
        or the whole image squashed, to 256/224 of S), and their mirror images (the AlexNet
        paper's ten patches).
        """
        if tta not in TTA_MODES:
            raise UserError(f"tta={tta} is not one of {', '.join(TTA_MODES)}")
        if tta == "ten_crop":
            side = self.resize_short_side or round(self.image_size * 256 / 224)
            size = [side] if self.resize_short_side else [side, side]
            resized = self._resized(image, size)
            return torch.stack(tvf.ten_crop(resized, [self.image_size, self.image_size]))
        view = self.resize(image)
        return torch.stack([view, view.flip(-1)]) if tta == "flip" else view.unsqueeze(0)

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, expected: str, got: Any) -> None:
    if not ok:
        raise UserError(f"the checkpoint's preprocessing must have {expected}, got {got}")


def _numbers(values: Any, key: str) -> tuple[float, ...]:
    """A record's list of finite numbers as a tuple (one-line error for anything else)."""
    try:
        numbers = tuple(float(value) for value in values if not isinstance(value, (bool, str)))
        ok = len(numbers) == len(values) and all(math.isfinite(value) for value in numbers)
    except (TypeError, ValueError):
        ok = False
    _require(ok, f"{key} as a list of finite numbers", values)
    return numbers


def dataset_channels(dataset: Any) -> int:
    """The channels a dataset's images have: 1 for grey in-memory sets, else 3 (decoded as RGB)."""
    splits = getattr(dataset, "splits", {})
    images = getattr(splits.get("train"), "images", None)
    return int(images.shape[1]) if isinstance(images, torch.Tensor) else 3


def eval_preprocessing(
    dataset: Any,
    image_size: int,
    augment: str = "none",
    *,
    resize_size: int | None = None,
    interpolation: str = "bilinear",
) -> EvalPreprocessing:
    """The evaluation input of a dataset whose model takes `image_size` (the centre crop), for
    the `augment` preset; `resize_size` (`data.val_resize_size`) is the short side resized to.

    Unset, the ImageNet-style presets evaluate on a centre crop of an image whose short side was
    resized to 256/224 of the crop (256 for 224); the others resize the whole image.
    """
    short_side = resize_size
    if short_side is None and augment in CENTRE_CROP_PRESETS:
        short_side = round(image_size * 256 / 224)
    return EvalPreprocessing(
        image_size=image_size,
        mean=tuple(dataset.mean),
        std=tuple(dataset.std),
        channels=dataset_channels(dataset),
        resize_short_side=short_side,
        interpolation=interpolation,
    )


def data_eval_preprocessing(dataset: Any, image_size: int, data: Any) -> EvalPreprocessing:
    """`eval_preprocessing` with the settings of a `data` config (`data.augment`,
    `data.val_resize_size`, `data.interpolation`; absent keys: the defaults)."""
    return eval_preprocessing(
        dataset,
        image_size,
        data.get("augment", "none"),
        resize_size=data.get("val_resize_size"),
        interpolation=data.get("interpolation", "bilinear"),
    )
