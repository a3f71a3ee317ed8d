"""VGG16 (Simonyan and Zisserman, 2014), configuration D, with torchvision's state_dict keys."""

from __future__ import annotations

import torch
from torch import nn

from cnn_train.models.init import init_plain_cnn
from cnn_train.models.pooling import pool_if_needed
from cnn_train.models.registry import register_model

CONFIG_D: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]
CONFIG_D += [512, 512, 512, "M", 512, 512, 512, "M"]


def make_features(config: list[int | str], batch_norm: bool = False) -> nn.Sequential:
    """3x3 stride-1 convolutions with ReLU (BatchNorm between if asked), a 2x2 max-pool at "M"."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(item)))
        layers.append(nn.ReLU(True))
        in_channels = int(item)
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """Thirteen 3x3 convolutions in five stages and three FC layers.

    The ImageNet variant is configuration D as published: no BatchNorm, pooled to 512x7x7, FC
    25088-4096-4096 (138,357,544 parameters at 1000 classes). The small-input variant follows
    CIFAR practice: BatchNorm after every convolution (without it the 13-layer stack does not
    train from scratch at usual learning rates) and FC 512-512 on the 512x1x1 map. Both take
    32 px and up.
    """

    def __init__(
        self, num_classes: int = 1000, variant: str = "imagenet", dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.features = make_features(CONFIG_D, batch_norm=variant == "small")
        side, hidden = (7, 4096) if variant == "imagenet" else (1, 512)
        self.avgpool = nn.AdaptiveAvgPool2d((side, side))
        self.classifier = nn.Sequential(
            nn.Linear(512 * side * side, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        init_plain_cnn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(pool_if_needed(self.avgpool, self.features(x)), 1))


@register_model(
    "vgg16",
    min_size={"imagenet": 32, "small": 32},
    channels_last_on_cpu_from=32,
    torchvision="vgg16",
    head="classifier.6",
)
def vgg16(num_classes: int = 1000, variant: str = "imagenet", dropout: float = 0.5) -> VGG16:
    """Build VGG16 (configuration D) in the ImageNet or small-input variant."""
    return VGG16(num_classes=num_classes, variant=variant, dropout=dropout)
