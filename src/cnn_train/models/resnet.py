"""ResNet-34 (He et al., 2015) from its two residual block types, with torchvision's keys."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from cnn_train.models.registry import register_model

STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
BLOCK_COUNT = sum(STAGE_BLOCKS)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with padding 1 and no bias (BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def drop_path(rate: float) -> nn.Module:
    """Stochastic depth on a residual branch: drop it for a whole sample with probability
    `rate` in training (no parameters, so the keys stay torchvision's); nothing at rate 0."""
    return StochasticDepth(rate, "row") if rate > 0 else nn.Identity()


class IdentityBlock(nn.Module):
    """The "solid line" block: y = F(x) + x, stride 1, the width kept."""

    def __init__(self, width: int, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.conv1 = conv3x3(width, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.drop_path(self.bn2(self.conv2(out))) + x)


class ConvBlock(nn.Module):
    """The "dashed line" block: y = F(x) + W x, where W is a strided 1x1 convolution and BN."""

    def __init__(
        self, in_width: int, out_width: int, stride: int = 2, drop_path_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_width, out_width, stride)
        self.bn1 = nn.BatchNorm2d(out_width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_width, out_width)
        self.bn2 = nn.BatchNorm2d(out_width)
        self.drop_path = drop_path(drop_path_rate)
        self.downsample = nn.Sequential(
            nn.Conv2d(in_width, out_width, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.drop_path(self.bn2(self.conv2(out))) + self.downsample(x))


def make_stage(
    in_width: int, out_width: int, stride: int, drop_path_rates: list[float]
) -> nn.Sequential:
    """One stage of `len(drop_path_rates)` blocks: a ConvBlock where the shape changes, then
    identity blocks."""
    first, *rest = drop_path_rates
    first_block: nn.Module = (
        IdentityBlock(out_width, first)
        if stride == 1 and in_width == out_width
        else ConvBlock(in_width, out_width, stride, first)
    )
    return nn.Sequential(first_block, *(IdentityBlock(out_width, rate) for rate in rest))


class ResNet34(nn.Module):
    """Stem, basic-block stages [3, 4, 6, 3] of width 64-512, global average pool, FC.

    The ImageNet variant has a 7x7 stride-2 stem conv and a 3x3 stride-2 max-pool (21,797,672
    parameters at 1000 classes); the small-input variant a 3x3 stride-1 stem and no max-pool.
    `zero_init_residual` zeroes the last BatchNorm scale of every block, so each starts as the
    identity (Goyal et al., 2017); `drop_path_rate` is the stochastic depth of the last block,
    the blocks before it rising linearly from 0 (timm's convention).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        variant: str = "imagenet",
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if variant == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(3, 64)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        widths = (64, *STAGE_WIDTHS)
        # in Python, not torch.linspace: the model may be built under a meta-device context
        rates = [drop_path_rate * i / (BLOCK_COUNT - 1) for i in range(BLOCK_COUNT)]
        for index, blocks in enumerate(STAGE_BLOCKS):
            stride = 1 if index == 0 else 2
            stage_rates, rates = rates[:blocks], rates[blocks:]
            stage = make_stage(widths[index], widths[index + 1], stride, stage_rates)
            self.add_module(f"layer{index + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if not zero_init_residual:
            return
        # after the loop above: it reaches a block's BatchNorms after the block itself
        for module in self.modules():
            if isinstance(module, IdentityBlock | ConvBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model(
    "resnet34",
    min_size={"imagenet": 1, "small": 1},
    channels_last_on_cpu_from=32,
    torchvision="resnet34",
    head="fc",
)
def resnet34(
    num_classes: int = 1000,
    variant: str = "imagenet",
    zero_init_residual: bool = False,
    drop_path_rate: float = 0.0,
) -> ResNet34:
    """Build ResNet-34 in the ImageNet or small-input variant (no dropout: BN regularises)."""
    return ResNet34(num_classes, variant, zero_init_residual, drop_path_rate)
