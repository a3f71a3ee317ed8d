"""Each model's facts live in its spec; engine, devices, precision and weights ask the spec."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cnn_train.distributed import place_model, resolve_device
from cnn_train.engine.precision import use_channels_last
from cnn_train.errors import UserError
from cnn_train.models import MODELS, build_from_config, build_model, get_spec, register_model
from cnn_train.models.pooling import pool_if_needed
from cnn_train.models.registry import BASE_MODEL_KEYS
from cnn_train.models.weights import freeze_features
from cnn_train.schema import ModelConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "cnn_train"
BUILT_IN = ("alexnet", "alexnet2012", "vgg16", "resnet34")
CPU = torch.device("cpu")
SPLIT_DEVICE = OmegaConf.create({"name": "alexnet_split", "devices": ["cpu", "cpu"]})


class TwoPart(nn.Module):
    """A user's split: the body on one device, the head on the other."""

    def __init__(self, model: nn.Sequential, devices: Sequence[torch.device | str]) -> None:
        super().__init__()
        self.devices = [torch.device(device) for device in devices]
        self.body = model[:-1].to(self.devices[0])
        self.head = model[-1].to(self.devices[1])

    @property
    def input_device(self) -> torch.device:
        return self.devices[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).to(self.devices[1]))


def _tiny(num_classes: int, variant: str, width: int = 8) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


@pytest.fixture
def user_models() -> Iterator[tuple[str, str]]:
    """Two models registered from outside the package, as a user's code does; removed after."""
    fast, plain = "spec_test_fastnet", "spec_test_plainnet"
    register_model(
        fast,
        min_size={"imagenet": 4, "small": 4},
        small_input_max_size=16,
        channels_last_on_cpu_from=16,
        head="4",
        split=TwoPart,
    )(_tiny)
    register_model(plain, min_size={"imagenet": 4})(lambda num_classes, variant: _tiny(2, variant))
    yield fast, plain
    MODELS.pop(fast), MODELS.pop(plain)


def test_a_user_model_gets_channels_last_on_the_cpu_from_its_spec(user_models) -> None:
    fast, plain = (get_spec(name) for name in user_models)
    assert use_channels_last(None, CPU, fast, 16) and not use_channels_last(None, CPU, fast, 8)
    assert not use_channels_last(None, CPU, plain, 224)
    assert use_channels_last(True, CPU, plain, 8) and not use_channels_last(False, CPU, fast, 64)
    assert use_channels_last(None, torch.device("cuda"), plain, 8)


def test_the_split_device_places_a_split_capable_user_model(user_models) -> None:
    fast, _ = user_models
    model = build_model(fast, 3, "imagenet")
    assert resolve_device(SPLIT_DEVICE) == CPU
    placed = place_model(model, SPLIT_DEVICE, CPU, spec=get_spec(fast), channels_last=False)
    assert isinstance(placed, TwoPart) and placed.input_device == CPU
    assert placed(torch.randn(2, 3, 8, 8)).shape == (2, 3)


def test_the_split_device_refuses_a_model_that_cannot_split_in_one_line(user_models) -> None:
    fast, plain = user_models
    with pytest.raises(UserError) as raised:
        place_model(
            build_model(plain, 2, "imagenet"),
            SPLIT_DEVICE,
            CPU,
            spec=get_spec(plain),
            channels_last=False,
        )
    message = str(raised.value)
    assert "\n" not in message and "split over two devices" in message
    assert "alexnet2012" in message and fast in message and f"model={plain}" in message


def test_a_user_spec_states_its_variant_rule_and_head(user_models) -> None:
    fast, plain = (get_spec(name) for name in user_models)
    assert fast.resolve_variant("auto", 16) == "small" and fast.resolve_variant("auto", 17) == (
        "imagenet"
    )
    assert plain.resolve_variant("auto", 8) == "imagenet"
    model = build_model(fast.name, 3, "small")
    freeze_features(model, fast.name)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"4.weight", "4.bias"}


def test_built_in_specs_state_their_facts() -> None:
    facts = {
        name: (spec.torchvision, spec.head_name(build_model(name, 10, "imagenet")), spec.split)
        for name, spec in ((name, get_spec(name)) for name in BUILT_IN)
    }
    assert facts["resnet34"][:2] == ("resnet34", "fc")
    assert facts["vgg16"][:2] == ("vgg16", "classifier.6")
    assert facts["alexnet"][:2] == (None, "classifier.6")
    assert facts["alexnet2012"][:2] == (None, "classifier.fc8")
    assert [name for name, fact in facts.items() if fact[2] is not None] == ["alexnet2012"]
    assert [name for name in BUILT_IN if get_spec(name).channels_last_on_cpu(32)] == [
        "vgg16",
        "resnet34",
    ]
    assert not get_spec("resnet34").channels_last_on_cpu(8)


@pytest.mark.parametrize(
    ("name", "variant", "size", "refused"),
    [
        ("alexnet", "imagenet", 224, False),
        ("alexnet", "imagenet", 64, True),
        ("alexnet2012", "imagenet", 96, True),
        ("vgg16", "imagenet", 224, False),
        ("vgg16", "imagenet", 64, True),
        ("vgg16", "small", 64, False),  # pooled to 1x1: a mean, deterministic
        ("resnet34", "imagenet", 100, False),
    ],
)
def test_deterministic_cuda_refuses_only_real_adaptive_pooling(name, variant, size, refused):
    model = build_model(name, 10, variant)
    reason = get_spec(name).deterministic_refusal(model, variant, size)
    assert (reason is not None) == refused
    if reason:
        assert f"{name} ({variant} variant) at {size} px" in reason and "\n" not in reason
    assert all(p.device.type == "cpu" for p in model.parameters())  # probed on meta, untouched


def test_the_pooling_guard_passes_maps_of_the_pooled_size_through() -> None:
    pool = nn.AdaptiveAvgPool2d((2, 2))
    x = torch.randn(1, 3, 2, 2)
    assert pool_if_needed(pool, x) is x
    assert pool_if_needed(pool, torch.randn(1, 3, 5, 5)).shape == (1, 3, 2, 2)


def test_build_from_config_passes_the_schemas_own_keys_to_the_builder(user_models) -> None:
    assert {item.name for item in fields(ModelConfig)} == BASE_MODEL_KEYS
    fast, _ = user_models
    config = {"name": fast, "num_classes": 5, "variant": "small", "weights": None, "width": 4}
    config["freeze_features"] = False
    model = build_from_config(config)
    assert model[0].out_channels == 4 and model[-1].out_features == 5


def test_inference_tools_import_no_dataset_builders() -> None:
    code = (
        "import sys, cnn_train.predict, cnn_train.export, cnn_train.models; "
        "print([m for m in sys.modules if m.startswith(('sklearn', "
        "'cnn_train.data.folder', 'cnn_train.data.vision', 'cnn_train.data.digits'))])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_code_outside_models_and_data_names_no_architecture() -> None:
    word = re.compile(rf"\b({'|'.join(BUILT_IN)})\b")
    found = [
        f"{path.relative_to(SRC)}:{number}"
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).parts[0] not in {"models", "data"}
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if word.search(line)
    ]
    assert found == []
