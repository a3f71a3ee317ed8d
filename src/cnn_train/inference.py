"""A checkpoint made ready for inference: its model in eval mode, class names and preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from cnn_train.checkpoint import RUN_KEYS, chosen_weights, load_checkpoint, require_run_checkpoint
from cnn_train.data.decode import image_to_rgb
from cnn_train.data.preprocessing import EvalPreprocessing
from cnn_train.errors import UserError, first_line
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
            image = image_to_rgb(image)  # read_rgb's conversion and bounds
        return self.evaluation(self.evaluation.from_rgb(image))

    def views(self, image: torch.Tensor, tta: str) -> torch.Tensor:
        """An image's test-time views as model inputs [V, 3, S, S] (`EvalPreprocessing.views`)."""
        views = self.evaluation.views(self.evaluation.from_rgb(image), tta)
        return self.evaluation.normalizer(views.device)(views).expand(-1, 3, -1, -1)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """A fixed random batch of the model's input shape, for tracing and checking exports."""
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch, *self.evaluation.input_shape, generator=generator)


def load_inference(path: str | Path, weights: str = "auto") -> InferenceModel:
    """Rebuild a cnn-train checkpoint's model with its weights, on the CPU, in eval mode.

    The stored config and preprocessing are checked as the command line's are, and the model
    is built on the meta device and compared with the stored tensors, before anything is
    allocated: a config can never make a model larger than the weights the file holds.
    `weights`: `model`, `ema`, or `auto` (those the run's monitor chose).
    """
    state = load_checkpoint(path)
    config, class_names, preprocessing = checked_run(state, path)
    model = model_from_weights(config["model"], chosen_weights(state, weights, path), path)
    return InferenceModel(model, class_names, preprocessing, config)


def checked_run(state: dict[str, Any], path: str | Path) -> tuple[dict, list[str], dict]:
    """The stored config, class names and preprocessing record, each checked (one-line errors)."""
    require_run_checkpoint(state, path, ("config", "model", *RUN_KEYS))
    config, names, record = state["config"], state["class_names"], state["preprocessing"]
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f"{path}: its stored config has no model section; pass a best.pt")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise UserError(f"{path}: its class_names are not a list of names")
    EvalPreprocessing.from_record(record)
    check_stored_config(config, path)
    classes = config["model"].get("num_classes")
    if classes != len(names):
        raise UserError(
            f"{path}: its config says model.num_classes={classes} but it names {len(names)} "
            "classes; the checkpoint is damaged"
        )
    return config, list(names), dict(record)


def check_stored_config(config: dict[str, Any], path: str | Path) -> None:
    """A checkpoint's model and data config through the command line's checks."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from cnn_train.config_checks import check_data_config, check_fields, schema_of
    from cnn_train.models import get_spec

    try:
        model = OmegaConf.create(config["model"])
        check_fields(model, schema_of(model, "model"), "model", strict=False)
        spec = get_spec(str(model.name))
        if model.variant not in spec.min_size:
            raise UserError(
                f"model.variant={model.variant} is not one of {', '.join(spec.min_size)}"
            )
        if isinstance(config.get("data"), dict):
            check_data_config(OmegaConf.create(config["data"]))
    except UserError as error:
        raise UserError(f"{path}: its stored config is refused: {first_line(error)}") from error
    except (OmegaConfBaseException, KeyError, TypeError, ValueError) as error:
        raise UserError(
            f"{path}: its stored config cannot be read ({first_line(error, type(error).__name__)})"
        ) from error


def model_from_weights(
    model_cfg: dict[str, Any], weights: dict[str, Any], path: str | Path
) -> nn.Module:
    """The config's model holding `weights`, in eval mode: built on the meta device first, so a
    config whose model differs from the stored tensors (a larger head) is refused unallocated."""
    try:
        with torch.device("meta"):
            model = build_from_config(model_cfg)
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise UserError(f"{path}: cannot build its model: {first_line(error)}") from error
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    stored = {
        key: tuple(value.shape) for key, value in weights.items() if isinstance(value, torch.Tensor)
    }
    if expected != stored:
        differ = sorted(set(expected) ^ set(stored)) or [
            key for key in expected if expected[key] != stored[key]
        ]
        raise UserError(
            f"{path}: its weights do not fit the model its config names ({model_cfg.get('name')}):"
            f" {differ[0]} {expected.get(differ[0])} vs stored {stored.get(differ[0])}"
        )
    model.load_state_dict(weights, assign=True)
    if any(tensor.is_meta for tensor in [*model.parameters(), *model.buffers()]):
        model = build_from_config(model_cfg)  # buffers outside the state_dict: build for real
        model.load_state_dict(weights)
    return model.eval()
