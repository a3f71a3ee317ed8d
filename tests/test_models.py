"""The three networks: exact sizes, shapes, torchvision compatibility, and the input-size rules."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnn_train.errors import UserError
from cnn_train.models import MODELS, build_model, resolve_variant, working_image_size
from cnn_train.models.resnet import ConvBlock, IdentityBlock


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("alexnet", 62_378_344), ("vgg16", 138_357_544), ("resnet34", 21_797_672)],
)
def test_parameter_counts_match_the_papers(name: str, expected: int) -> None:
    assert count(build_model(name, 1000, "imagenet")) == expected


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_224_image_gives_1000_logits(name: str) -> None:
    model = build_model(name, 1000, "imagenet").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


@pytest.mark.parametrize(
    ("name", "reference"),
    [("resnet34", torchvision.models.resnet34), ("vgg16", torchvision.models.vgg16)],
)
def test_torchvision_weights_load_and_give_the_same_logits(name: str, reference) -> None:
    torch.manual_seed(0)
    theirs = reference().eval()
    ours = build_model(name, 1000, "imagenet").eval()
    ours.load_state_dict(theirs.state_dict())
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), theirs(images), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "variant"),
    [(name, variant) for name, spec in MODELS.items() for variant in spec.min_size],
)
def test_each_variant_knows_its_smallest_input(name: str, variant: str) -> None:
    smallest = MODELS[name].min_size[variant]
    model = build_model(name, 10, variant).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, smallest, smallest)).shape == (1, 10)
        if smallest > 1:
            with pytest.raises(RuntimeError):
                model(torch.randn(1, 3, smallest - 1, smallest - 1))


@pytest.mark.parametrize(
    ("name", "variant", "size"),
    [("resnet34", "small", 8), ("vgg16", "small", 32), ("alexnet", "imagenet", 64)],
)
def test_digits_working_size_per_model(name: str, variant: str, size: int) -> None:
    assert resolve_variant(name, "auto", 8) == variant
    assert working_image_size(name, variant, native_size=8, requested=None) == size


def test_auto_variant_is_imagenet_above_32_px() -> None:
    assert resolve_variant("resnet34", "auto", 224) == "imagenet"
    assert resolve_variant("vgg16", "auto", 32) == "small"


def test_too_small_input_names_the_minimum_and_the_override() -> None:
    with pytest.raises(UserError, match=r"at least 63 px.*data\.image_size=63"):
        working_image_size("alexnet", "imagenet", native_size=8, requested=32)


def test_alexnet_has_no_small_variant() -> None:
    with pytest.raises(UserError, match="no 'small' variant"):
        resolve_variant("alexnet", "small", 8)


def test_small_variants_change_stem_and_head() -> None:
    resnet = build_model("resnet34", 10, "small")
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert isinstance(resnet.maxpool, torch.nn.Identity)
    vgg = build_model("vgg16", 10, "small")
    assert vgg.classifier[0].in_features == 512


def test_identity_block_keeps_shape_and_conv_block_projects() -> None:
    x = torch.randn(2, 128, 8, 8)
    assert IdentityBlock(128)(x).shape == x.shape
    assert ConvBlock(128, 256, stride=2)(x).shape == (2, 256, 4, 4)
    assert IdentityBlock(32)(torch.randn(1, 32, 4, 4)).shape == (1, 32, 4, 4)
