"""Starting weights: checkpoints, torchvision state_dicts and names, fine-tuning, freezing."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision import models as tv_models

from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.models import build_model
from cnn_train.models.weights import freeze_features, load_weights


@pytest.fixture(scope="module")
def torchvision_resnet34(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision resnet34 state_dict (random weights, torchvision's own keys and shapes)."""
    path = tmp_path_factory.mktemp("tv") / "resnet34.pth"
    torch.save(tv_models.resnet34().state_dict(), path)
    return path


def test_a_torchvision_state_dict_loads_into_the_imagenet_variant(torchvision_resnet34) -> None:
    model = build_model("resnet34", 1000, "imagenet")
    load_weights(model, str(torchvision_resnet34), "resnet34", "imagenet")
    saved = torch.load(torchvision_resnet34, weights_only=True)
    assert torch.equal(model.state_dict()["layer3.2.conv1.weight"], saved["layer3.2.conv1.weight"])
    assert torch.equal(model.fc.weight, saved["fc.weight"])


def test_another_class_count_reinitialises_only_the_head(torchvision_resnet34) -> None:
    model = build_model("resnet34", 7, "imagenet")
    fresh_head = model.fc.weight.clone()
    load_weights(model, str(torchvision_resnet34), "resnet34", "imagenet")
    saved = torch.load(torchvision_resnet34, weights_only=True)
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
    assert torch.equal(model.fc.weight, fresh_head) and model.fc.weight.shape == (7, 512)


def test_imagenet_weights_into_the_small_variant_name_the_fix(torchvision_resnet34) -> None:
    model = build_model("resnet34", 10, "small")
    with pytest.raises(UserError, match=r"model\.variant=imagenet"):
        load_weights(model, str(torchvision_resnet34), "resnet34", "small")


def test_weights_of_another_model_are_a_user_error(torchvision_resnet34) -> None:
    with pytest.raises(UserError, match="does not fit this model"):
        load_weights(build_model("vgg16", 10, "small"), str(torchvision_resnet34), "vgg16", "small")


def test_published_weights_come_from_torchvisions_cache(
    torchvision_resnet34, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = tv_models.ResNet34_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(torchvision_resnet34.read_bytes())
    model = build_model("resnet34", 1000, "imagenet")
    load_weights(model, "IMAGENET1K_V1", "resnet34", "imagenet")
    saved = torch.load(torchvision_resnet34, weights_only=True)
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])


def test_offline_published_weights_say_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    model = build_model("vgg16", 1000, "imagenet")
    with pytest.raises(UserError) as raised:
        load_weights(model, "IMAGENET1K_V1", "vgg16", "imagenet")
    message = str(raised.value)
    assert "\n" not in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message


@pytest.mark.parametrize(
    ("name", "variant", "spec", "match"),
    [
        ("alexnet", "imagenet", "IMAGENET1K_V1", "model=resnet34 or model=vgg16"),
        ("resnet34", "small", "IMAGENET1K_V1", "model.variant=imagenet"),
        ("resnet34", "imagenet", "IMAGENET9K_V9", "IMAGENET1K_V1"),
    ],
)
def test_bad_published_weight_requests_are_user_errors(name, variant, spec, match) -> None:
    with pytest.raises(UserError, match=match):
        load_weights(build_model(name, 1000, variant), spec, name, variant)


def test_freeze_features_trains_the_head_only(train_config, tmp_path: Path) -> None:
    model = build_model("vgg16", 10, "small")
    freeze_features(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.6.weight", "classifier.6.bias"}
    first = tmp_path / "first"
    first.mkdir()
    run_training(train_config("trainer.max_steps=2"), first)
    second = tmp_path / "second"
    second.mkdir()
    checkpoint = first / "checkpoints" / "last.pt"
    run_training(
        train_config(
            f"model.weights={checkpoint}", "model.freeze_features=true", "trainer.max_steps=2"
        ),
        second,
    )
    before = torch.load(checkpoint, weights_only=True)["model"]
    after = torch.load(second / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.equal(before["layer2.0.conv1.weight"], after["layer2.0.conv1.weight"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def test_a_missing_weights_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"model\.weights=.*W\.PTH: no such file"):
        load_weights(build_model("vgg16", 10, "small"), str(tmp_path / "W.PTH"), "vgg16", "small")
