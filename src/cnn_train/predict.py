"""Classify image files with a checkpoint (the `cnn-predict` job)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from cnn_train.data.decode import (
    IMAGE_SUFFIXES,
    BadImageError,
    image_files,
    is_image_name,
    read_rgb,
    report_ignored,
)
from cnn_train.errors import UserError
from cnn_train.inference import load_inference

log = logging.getLogger("cnn_train")


def image_paths(items: list[str] | str) -> list[Path]:
    """The image files named: files as given, folders expanded to their images.

    A folder gives what a folder dataset would read (`data.decode.image_files`: visible regular
    files with an image extension, no hidden entries at any level, never a FIFO or a device). A
    file named explicitly is kept whatever it is, and the reading decides: anything but a regular
    image file is reported as skipped.
    """
    paths: list[Path] = []
    ignored: list[str] = []
    for item in [items] if isinstance(items, str) else list(items):
        path = Path(str(item)).expanduser()
        if path.is_dir():
            paths += [Path(found) for found in image_files(path, ignored)]
        elif path.exists():  # a FIFO or a device too: reading refuses it without opening it
            paths.append(path)
        else:
            raise UserError(f"images: {path} does not exist; pass images=[a.jpg,b.png] or a folder")
    report_ignored(ignored)
    if not paths:
        raise UserError("images: no image files found; pass images=[a.jpg,b.png] or a folder")
    return paths


def read_image(path: Path) -> torch.Tensor:
    """A file named as an image, decoded with the data loaders' bounds (see `data.decode`)."""
    if not is_image_name(path.name.lstrip(".")):
        raise BadImageError(f"not an image file name (one of {', '.join(IMAGE_SUFFIXES)})")
    return read_rgb(str(path))


@torch.inference_mode()
def predict(
    checkpoint: str,
    images: list[str] | str,
    topk: int = 5,
    *,
    weights: str = "auto",
    tta: str = "none",
) -> list[dict[str, Any]]:
    """For each image, the top-k class names and probabilities under the checkpoint's model
    (its `weights`: auto, model or ema), averaged over the `tta` views (none, flip, ten_crop).

    Files are decoded as the data loaders decode them, so an image of the validation split gets
    the input tensor its validation gave.
    """
    if topk < 1:
        raise UserError(f"topk must be >= 1, got {topk}")
    loaded = load_inference(checkpoint, weights)
    k = min(topk, len(loaded.class_names))
    results = []
    paths = image_paths(images)
    for path in paths:
        try:
            image = read_image(path)
            batch = (
                loaded.preprocess(image).unsqueeze(0) if tta == "none" else loaded.views(image, tta)
            )
        except (BadImageError, OSError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
            log.warning(f"skipped {path}: not a readable image ({reason[:200]})")
            results.append({"image": str(path), "skipped": reason[:200]})
            continue
        probabilities = loaded.model(batch).softmax(dim=1).mean(dim=0)
        values, indices = probabilities.topk(k)
        results.append(
            {
                "image": str(path),
                "top": [
                    {"class": loaded.class_names[i], "probability": float(p)}
                    for p, i in zip(values.tolist(), indices.tolist(), strict=True)
                ],
            }
        )
    if all("skipped" in result for result in results):
        raise UserError(f"none of the {len(paths)} images could be read; see the lines above")
    return results


def format_predictions(results: list[dict[str, Any]]) -> str:
    """One block per image: its path, then `probability  class` lines, best first."""
    lines = []
    for result in results:
        lines.append(result["image"])
        if "skipped" in result:
            lines.append(f"  skipped: {result['skipped']}")
            continue
        lines += [f"  {top['probability']:.4f}  {top['class']}" for top in result["top"]]
    return "\n".join(lines)
