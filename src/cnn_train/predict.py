"""Classify image files with a checkpoint (the `cnn-predict` job)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from cnn_train.data.decode import BadImageError, read_rgb
from cnn_train.errors import UserError
from cnn_train.inference import load_inference

log = logging.getLogger("cnn_train")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def image_paths(items: list[str] | str) -> list[Path]:
    """The image files named: files as given, folders expanded to their images (sorted)."""
    paths: list[Path] = []
    for item in [items] if isinstance(items, str) else list(items):
        path = Path(item).expanduser()
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"images: {path} does not exist; pass images=[a.jpg,b.png] or a folder")
    if not paths:
        raise UserError("images: no image files found; pass images=[a.jpg,b.png] or a folder")
    return paths


@torch.inference_mode()
def predict(checkpoint: str, images: list[str] | str, topk: int = 5) -> list[dict[str, Any]]:
    """For each image, the top-k class names and probabilities under the checkpoint's model.

    Files are decoded as the data loaders decode them, so an image of the validation split gets
    the input tensor its validation gave.
    """
    if topk < 1:
        raise UserError(f"topk must be >= 1, got {topk}")
    loaded = load_inference(checkpoint)
    k = min(topk, len(loaded.class_names))
    results = []
    paths = image_paths(images)
    for path in paths:
        try:
            batch = loaded.preprocess(read_rgb(str(path))).unsqueeze(0)
        except (BadImageError, OSError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
            log.warning(f"skipped {path}: not a readable image ({reason[:200]})")
            results.append({"image": str(path), "skipped": reason[:200]})
            continue
        probabilities = loaded.model(batch).softmax(dim=1)[0]
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
