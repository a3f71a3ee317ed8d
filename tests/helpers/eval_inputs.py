"""Evaluation inputs as each path gives them: small class folders of odd-sized colour and grey
files, the rows a loader yields per file, a checkpoint's record after a save and load, and the
inputs `cnn-predict` feeds its model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cnn_train.predict as predict_module
from cnn_train.inference import InferenceModel


def random_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def write_folder(root: Path) -> list[Path]:
    """train/ and val/ class folders; val/ holds non-square colour and grey PNGs and JPEGs."""
    for c, name in enumerate(("cat", "dog")):
        (root / "train" / name).mkdir(parents=True)
        (root / "val" / name).mkdir(parents=True)
        for i in range(2):
            random_image("RGB", 40, 30, 10 * c + i).save(root / "train" / name / f"{i}.png")
    files = {
        "val/cat/colour.jpg": random_image("RGB", 50, 37, 1),
        "val/cat/grey.png": random_image("L", 37, 50, 2),
        "val/dog/colour.png": random_image("RGB", 50, 37, 3),
        "val/dog/grey.jpg": random_image("L", 50, 37, 4),
    }
    for name, image in files.items():
        image.save(root / name)
    return sorted(root / name for name in files)


def by_file(loader, paths: list[str]) -> dict[str, torch.Tensor]:
    """Each file's input tensor, from a loader that yields the split in order."""
    rows = torch.cat([images for images, _ in loader])
    assert len(rows) == len(paths)
    return dict(zip(paths, rows, strict=True))


def checkpoint_record(record: dict) -> dict:
    """The record as a checkpoint gives it back (torch.save, then a weights-only load)."""
    buffer = io.BytesIO()
    torch.save({"preprocessing": record}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["preprocessing"]


class Recorder(nn.Module):
    """A model that keeps the batches it is given."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.inputs: list[torch.Tensor] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.inputs.append(batch.clone())
        return torch.zeros(len(batch), self.classes)


def predicted_inputs(
    loaded: InferenceModel, paths: list[str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, torch.Tensor]:
    """The input tensor `cnn-predict` gives the model for each file."""
    recorder = Recorder(len(loaded.class_names))
    loaded.model = recorder
    monkeypatch.setattr(predict_module, "load_inference", lambda checkpoint, *args: loaded)
    predict_module.predict("best.pt", paths, topk=1)
    return {path: batch[0] for path, batch in zip(paths, recorder.inputs, strict=True)}
