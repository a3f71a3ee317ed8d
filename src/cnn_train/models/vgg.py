"""VGG16 (Simonyan and Zisserman, 2014), configuration D, with torchvision's state_dict keys."""

from __future__ import annotations

import torch
from torch import nn

CONFIG_D: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]
CONFIG_D += [512, 512, 512, "M", 512, 512, 512, "M"]


def make_features(config: list[int | str]) -> nn.Sequential:
    """3x3 stride-1 convolutions with ReLU, and a 2x2 max-pool at each "M"."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU(True)]
            in_channels = int(item)
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """Thirteen 3x3 convolutions in five stages and three FC layers.

    The ImageNet variant pools to 512x7x7 and has FC 25088-4096-4096 (138,357,544 parameters at
    1000 classes). The small-input variant (32 px, as in CIFAR practice) classifies the 512x1x1 map
    with FC 512-512-512. Both take 32 px and up.
    """

    def __init__(
        self, num_classes: int = 1000, variant: str = "imagenet", dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.features = make_features(CONFIG_D)
        side, hidden = (7, 4096) if variant == "imagenet" else (1, 512)
        self.pooled_size = (side, side)
        self.avgpool = nn.AdaptiveAvgPool2d(self.pooled_size)
        self.classifier = nn.Sequential(
            nn.Linear(512 * side * side, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if x.shape[-2:] != self.pooled_size:
            x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


def vgg16(num_classes: int = 1000, variant: str = "imagenet", dropout: float = 0.5) -> VGG16:
    """Build VGG16 (configuration D) in the ImageNet or small-input variant."""
    return VGG16(num_classes=num_classes, variant=variant, dropout=dropout)
