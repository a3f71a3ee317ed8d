"""Starting weights (`model.weights`): a local file or torchvision's published weights.

A cnn-train checkpoint or a torchvision state_dict loads into the matching model; when only the
class count differs, the classifier head keeps its fresh initialisation (fine-tuning).
"""

from __future__ import annotations

import logging
import re
import urllib.error
from pathlib import Path

import torch
from torch import nn

from cnn_train.checkpoint import load_checkpoint
from cnn_train.errors import UserError
from cnn_train.models.registry import MODELS, build_model, get_spec, last_linear

log = logging.getLogger(__name__)


def _is_published_name(spec: str) -> bool:
    return re.fullmatch(r"[A-Z][A-Z0-9_]*", spec) is not None


def torchvision_state_dict(name: str, variant: str, spec: str) -> dict[str, torch.Tensor]:
    """torchvision's published weights `spec` for `name`, through its download and cache."""
    from torchvision.models import get_model_weights

    architecture = get_spec(name).torchvision
    if architecture is None:
        matching = sorted(key for key, model in MODELS.items() if model.torchvision)
        raise UserError(
            f"model.weights={spec} needs torchvision's architecture; it matches only "
            f"model={' or model='.join(matching)}, not model={name}"
        )
    if variant != "imagenet":
        raise UserError(
            f"model.weights={spec} holds ImageNet-variant weights; use model.variant=imagenet"
        )
    enum = get_model_weights(architecture)
    try:
        weights = enum[spec] if spec != "DEFAULT" else enum.DEFAULT
    except KeyError:
        choices = ", ".join(member.name for member in enum)
        raise UserError(f"model.weights={spec} is not one of {name}'s: {choices}") from None
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False)
    except (urllib.error.URLError, OSError) as error:
        raise UserError(
            f"cannot download {weights.url} ({error}); offline, put that file at {cache}"
        ) from error


def _checkpoint_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors") and Path(path).expanduser().is_file():
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise UserError(
                f"model.weights={path} needs the 'safetensors' package; "
                "pip install 'cnn-train[safetensors]'"
            ) from error
        return load_file(str(Path(path).expanduser()))
    if not Path(path).expanduser().is_file():
        raise UserError(
            f"model.weights={path}: no such file; pass a cnn-train checkpoint, a state_dict "
            "file or a torchvision weights name such as IMAGENET1K_V1"
        )
    state = load_checkpoint(path)
    weights = state["model"] if isinstance(state.get("model"), dict) else state
    if not all(isinstance(value, torch.Tensor) for value in weights.values()):
        raise UserError(f"model.weights={path} is neither a state_dict nor a cnn-train checkpoint")
    return weights


def _same_shapes(own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> bool:
    return set(own) == set(weights) and all(
        own[key].shape == value.shape for key, value in weights.items()
    )


def load_weights(model: nn.Module, spec: str, name: str, variant: str) -> None:
    """Load `spec` (a file path or a torchvision weights name) into `model`, built as `name`.

    A head of another class count is left re-initialised; any other misfit is a UserError.
    """
    if _is_published_name(spec) and not Path(spec).exists():
        weights = torchvision_state_dict(name, variant, spec)
    else:
        weights = _checkpoint_state_dict(spec)
    head = get_spec(name).head_name(model)
    own = model.state_dict()
    head_keys = {key for key in own if key.startswith(f"{head}.")}
    reinit = {key for key in head_keys if key in weights and weights[key].shape != own[key].shape}
    body = {key: value for key, value in weights.items() if key not in reinit}
    body_own = {key: value for key, value in own.items() if key not in reinit}
    if not _same_shapes(body_own, body):
        _explain_misfit(spec, name, variant, weights, own)
    model.load_state_dict(body, strict=False)
    if reinit:
        log.info(
            f"loaded {spec}; the classifier head ({head}) has another class count, "
            "so it starts from a fresh initialisation"
        )
    else:
        log.info(f"loaded {spec}")


def _explain_misfit(
    spec: str,
    name: str,
    variant: str,
    weights: dict[str, torch.Tensor],
    own: dict[str, torch.Tensor],
) -> None:
    model_spec = get_spec(name)
    if variant == "small" and model_spec.torchvision is not None:
        imagenet = build_model(name, 1000, "imagenet")
        head = model_spec.head_name(imagenet)
        body = {key: value for key, value in weights.items() if not key.startswith(f"{head}.")}
        reference = {key: value for key, value in imagenet.state_dict().items() if key in body}
        if _same_shapes(reference, body):
            raise UserError(
                f"model.weights={spec} holds ImageNet-variant weights but the small-input "
                f"variant was chosen; use model.variant=imagenet"
            )
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    detail = (
        f"missing {missing[0]}"
        if missing
        else f"unexpected {unexpected[0]}"
        if unexpected
        else f"{wrong[0]} has shape {tuple(weights[wrong[0]].shape)}, "
        f"the model {tuple(own[wrong[0]].shape)}"
    )
    raise UserError(
        f"model.weights={spec} does not fit this model ({name}, {variant} variant): {detail}; "
        "check model and model.variant"
    )


def freeze_features(model: nn.Module, name: str | None = None) -> None:
    """Train the classifier head only (the one the spec of model `name` names, else the last
    linear layer): every other parameter stops requiring gradients."""
    prefix = f"{get_spec(name).head_name(model) if name else last_linear(model)}."
    for key, parameter in model.named_parameters():
        parameter.requires_grad_(key.startswith(prefix))
