"""A checkpoint made ready for inference: its model in eval mode, class names and preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2.functional import pil_to_tensor

from cnn_train.checkpoint import load_checkpoint
from cnn_train.data.preprocessing import EvalPreprocessing
from cnn_train.errors import UserError
from cnn_train.models.registry import build_from_config


@dataclass
class InferenceModel:
    """A trained model on the CPU in eval mode, with what it needs to classify images.

    `preprocessing` is the checkpoint's record; `evaluation` is the transform it describes.
    """

    model: nn.Module
    class_names: list[str]
    preprocessing: dict[str, Any]
    config: dict[str, Any]
    evaluation: EvalPreprocessing = field(init=False)

    def __post_init__(self) -> None:
        self.evaluation = EvalPreprocessing.from_record(self.preprocessing)

    def preprocess(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """An image as the model's eval input [3, S, S], the tensor the run's val loader made.

        `image`: a PIL image, or uint8 RGB [3, H, W] as `data.decode.read_rgb` reads files
        (which `cnn-predict` uses, so JPEGs are decoded as the loaders decode them).
        """
        if isinstance(image, Image.Image):
            image = pil_to_tensor(image.convert("RGB"))  # read_rgb's conversion
        return self.evaluation(self.evaluation.from_rgb(image))

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """A fixed random batch of the model's input shape, for tracing and checking exports."""
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch, *self.evaluation.input_shape, generator=generator)


def load_inference(path: str | Path) -> InferenceModel:
    """Rebuild a cnn-train checkpoint's model with its weights, on the CPU, in eval mode."""
    state = load_checkpoint(path)
    if "config" not in state or "model" not in state or "class_names" not in state:
        raise UserError(f"{path} is a weights file, not a cnn-train checkpoint; pass a best.pt")
    config = state["config"]
    model = build_from_config(config["model"])
    model.load_state_dict(state["model"])
    model.eval()
    return InferenceModel(model, list(state["class_names"]), state["preprocessing"], config)
