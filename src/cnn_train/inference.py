"""A checkpoint made ready for inference: its model in eval mode, class names and preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from cnn_train.build import model_from_config
from cnn_train.checkpoint import load_checkpoint
from cnn_train.errors import UserError


@dataclass
class InferenceModel:
    """A trained model on the CPU in eval mode, with what it needs to classify images."""

    model: nn.Module
    class_names: list[str]
    preprocessing: dict[str, Any]
    config: dict[str, Any]

    def preprocess(self, image: Any) -> torch.Tensor:
        """A PIL image as the model's eval input [3, S, S], as the run's val loader made it."""
        prep = self.preprocessing
        image = image.convert("L" if prep["channels"] == 1 else "RGB")
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
        pixels = pixels.unsqueeze(-1) if pixels.dim() == 2 else pixels
        batch = pixels.permute(2, 0, 1).unsqueeze(0)
        size = prep["image_size"]
        if prep.get("resize_short_side"):
            batch = v2.functional.resize(batch, prep["resize_short_side"], antialias=True)
            batch = v2.functional.center_crop(batch, [size, size])
        elif batch.shape[-2:] != (size, size):
            batch = v2.functional.resize(batch, [size, size], antialias=True)
        batch = batch.float()
        channels = batch.shape[1]
        mean = torch.tensor(prep["mean"][:channels]).view(1, channels, 1, 1)
        std = torch.tensor(prep["std"][:channels]).view(1, channels, 1, 1)
        return ((batch / 255.0 - mean) / std).expand(-1, 3, -1, -1)[0]

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """A fixed random batch of the model's input shape, for tracing and checking exports."""
        size = self.preprocessing["image_size"]
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch, 3, size, size, generator=generator)


def load_inference(path: str | Path) -> InferenceModel:
    """Rebuild a cnn-train checkpoint's model with its weights, on the CPU, in eval mode."""
    state = load_checkpoint(path)
    if "config" not in state or "model" not in state or "class_names" not in state:
        raise UserError(f"{path} is a weights file, not a cnn-train checkpoint; pass a best.pt")
    config = state["config"]
    model = model_from_config(config["model"])
    model.load_state_dict(state["model"])
    model.eval()
    return InferenceModel(model, list(state["class_names"]), state["preprocessing"], config)
