"""The model registry: name -> builder, and everything the rest of the code must know about it.

Add a model from your own code with one decorated function (and a YAML file under your own
`configs/model/`):

    from cnn_train.models import register_model

    @register_model("mynet", min_size={"imagenet": 32})
    def mynet(num_classes: int, variant: str) -> nn.Module: ...

The builder is called with `num_classes`, `variant` and the model config's other keys (those
its schema adds to ModelConfig, e.g. `dropout`; FROM_SCRATCH_OPTIONS arrive resolved). The
decorator's other keywords state the rest of `ModelSpec` (channels_last on the CPU, torchvision
weights, the head, a two-device split); their defaults suit a plain classifier. Engine, devices
and precision ask the spec, never a name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from cnn_train.errors import UserError
from cnn_train.models.pooling import adaptive_pooling
from cnn_train.plugins import load_plugins

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])
Splitter = Callable[[nn.Module, Sequence[torch.device | str]], nn.Module]

SMALL_INPUT_MAX_SIZE = 32
SIZE_ROUNDING = 8
# ModelConfig's own keys (cnn_train.schema, which imports Hydra); every other key is the builder's.
BASE_MODEL_KEYS = frozenset({"name", "num_classes", "variant", "weights", "freeze_features"})
# Builder options about the initialisation that a null leaves to the run: on for a network
# trained from scratch, off when `model.weights` replaces the initialisation it would shape.
FROM_SCRATCH_OPTIONS = frozenset({"zero_init_residual"})
# The `device=` option that places a split-capable model over two devices (configs/device/).
SPLIT_DEVICE_NAME = "alexnet_split"
SPLIT_DEVICE = f"device={SPLIT_DEVICE_NAME}"


@dataclass(frozen=True)
class ModelSpec:
    """One architecture: how to build it and what the rest of the code must know about it.

    `min_size` maps each variant to its smallest input side (the first is the default); `auto`
    picks `small` at or below `small_input_max_size`. channels_last pays on the CPU from
    `channels_last_on_cpu_from` px (None: never; below it the reorders cost more than the NHWC
    kernels gain). `torchvision` names its published weights,
    `head` its classifier module (None: the last nn.Linear). `nondeterministic_op(model, side)`
    names an op without a deterministic CUDA backward at that side. `split(model, devices)` puts
    the model on two devices (None: it cannot be split).
    """

    name: str
    build: Callable[..., nn.Module]
    min_size: Mapping[str, int]
    small_input_max_size: int = SMALL_INPUT_MAX_SIZE
    channels_last_on_cpu_from: int | None = None
    torchvision: str | None = None
    head: str | None = None
    nondeterministic_op: Callable[[nn.Module, int], str | None] = adaptive_pooling
    split: Splitter | None = None

    def resolve_variant(self, variant: str, image_size: int) -> str:
        """Pick the variant: `auto` means small-input for small images, if one exists."""
        if variant == "auto":
            small = "small" in self.min_size and image_size <= self.small_input_max_size
            return "small" if small else next(iter(self.min_size))
        if variant not in self.min_size:
            raise UserError(
                f"model {self.name} has no '{variant}' variant; use model.variant="
                + " or model.variant=".join(["auto", *self.min_size])
            )
        return variant

    def working_image_size(self, variant: str, native_size: int, requested: int | None) -> int:
        """The side images are fed at: the request, else native if the model takes it, else its
        minimum, rounded up to a multiple of 8 (AlexNet's 63 px becomes 64)."""
        smallest = self.min_size[variant]
        if requested is not None:
            if requested < smallest:
                raise UserError(
                    f"{self.name} ({variant} variant) needs images of at least {smallest} px, "
                    f"got data.image_size={requested}; use data.image_size={smallest} or larger"
                )
            return requested
        if native_size >= smallest:
            return native_size
        return -(-smallest // SIZE_ROUNDING) * SIZE_ROUNDING

    def channels_last_on_cpu(self, image_size: int) -> bool:
        """Whether the NHWC memory format was measured faster on the CPU at this side."""
        start = self.channels_last_on_cpu_from
        return start is not None and image_size >= start

    def head_name(self, model: nn.Module) -> str:
        """The classifier head's module name: `head`, else the model's last linear layer."""
        return self.head if self.head is not None else last_linear(model)

    def deterministic_refusal(self, model: nn.Module, variant: str, image_size: int) -> str | None:
        """Why trainer.deterministic=true cannot hold on CUDA at this side, or None if it can."""
        op = self.nondeterministic_op(model, image_size)
        if op is None:
            return None
        return (
            f"trainer.deterministic=true: {self.name} ({variant} variant) at {image_size} px "
            f"needs {op}, which has no deterministic CUDA backward; use the image size it was "
            "designed for (e.g. data.image_size=224) or trainer.deterministic=false"
        )

    def place_split(self, model: nn.Module, devices: Sequence[torch.device | str]) -> nn.Module:
        """The model split over `devices` (already placed: do not `.to()` it)."""
        if self.split is None:
            able = sorted(name for name, spec in MODELS.items() if spec.split is not None)
            raise UserError(
                f"{SPLIT_DEVICE} needs a model that can be split over two devices: "
                f"{', '.join(able) or 'none is registered'}; model={self.name} cannot"
            )
        return self.split(model, devices)


def last_linear(model: nn.Module) -> str:
    """The module name of the model's last linear layer (the usual classifier head)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise UserError("this model has no linear classifier head to fine-tune")
    return names[-1]


MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    min_size: Mapping[str, int],
    small_input_max_size: int = SMALL_INPUT_MAX_SIZE,
    channels_last_on_cpu_from: int | None = None,
    torchvision: str | None = None,
    head: str | None = None,
    nondeterministic_op: Callable[[nn.Module, int], str | None] = adaptive_pooling,
    split: Splitter | None = None,
) -> Callable[[Builder], Builder]:
    """Register `builder` under `name` with the facts of its `ModelSpec` (see there)."""

    def register(builder: Builder) -> Builder:
        if name in MODELS and MODELS[name].build is not builder:
            raise ValueError(f"a model named '{name}' is already registered")
        MODELS[name] = ModelSpec(
            name,
            builder,
            dict(min_size),
            small_input_max_size=small_input_max_size,
            channels_last_on_cpu_from=channels_last_on_cpu_from,
            torchvision=torchvision,
            head=head,
            nondeterministic_op=nondeterministic_op,
            split=split,
        )
        return builder

    return register


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or a UserError listing the valid names."""
    if name not in MODELS:
        load_plugins()
    if name not in MODELS:
        choices = ", ".join(sorted(MODELS))
        raise UserError(f"unknown model '{name}' (model.name); choose one of: {choices}")
    return MODELS[name]


def build_model(name: str, num_classes: int, variant: str, **options: Any) -> nn.Module:
    """Build a registered model; `options` are its own settings (e.g. `dropout`)."""
    return get_spec(name).build(num_classes=num_classes, variant=variant, **options)


def build_from_config(
    model_cfg: Mapping[str, Any], num_classes: int | None = None, variant: str | None = None
) -> nn.Module:
    """Build the model a model config names (a resolved one, as saved in checkpoints, by default).

    The keys its schema adds to ModelConfig (e.g. `dropout`) go to the builder; those of
    FROM_SCRATCH_OPTIONS left null are on unless `weights` names a network to start from.
    """
    options = {key: value for key, value in model_cfg.items() if key not in BASE_MODEL_KEYS}
    from_scratch = not model_cfg.get("weights")
    for key in FROM_SCRATCH_OPTIONS & options.keys():
        if options[key] is None:
            options[key] = from_scratch
    return build_model(
        model_cfg["name"],
        num_classes or model_cfg["num_classes"],
        variant or model_cfg["variant"],
        **options,
    )


def resolve_variant(name: str, variant: str, image_size: int) -> str:
    """`ModelSpec.resolve_variant` of the model `name`."""
    return get_spec(name).resolve_variant(variant, image_size)


def working_image_size(name: str, variant: str, native_size: int, requested: int | None) -> int:
    """`ModelSpec.working_image_size` of the model `name`."""
    return get_spec(name).working_image_size(variant, native_size, requested)


def split_devices(names: Sequence[torch.device | str]) -> list[torch.device]:
    """The two devices of `device.devices`, checked: parseable and present on this machine."""
    if len(names) != 2:
        raise UserError(
            f"{SPLIT_DEVICE} needs device.devices to list two devices, got {list(names)}; "
            "e.g. device.devices=[cuda:0,cuda:1]"
        )
    devices = []
    for name in names:
        try:
            device = torch.device(name)
        except RuntimeError as error:
            raise UserError(
                f"device.devices has '{name}', not a device; use e.g. cuda:0, cuda:1 or cpu"
            ) from error
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise UserError(
                f"device.devices lists {device} but {torch.cuda.device_count()} CUDA GPU(s) are "
                "visible; on one GPU use device.devices=[cuda:0,cpu]"
            )
        devices.append(device)
    return devices
