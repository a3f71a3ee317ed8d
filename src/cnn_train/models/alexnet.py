"""AlexNet (Krizhevsky et al., 2012), the one-tower network of the reference text."""

from __future__ import annotations

import torch
from torch import nn

from cnn_train.models.init import init_he
from cnn_train.models.pooling import pool_if_needed
from cnn_train.models.registry import register_model

POOLED_SIZE = (6, 6)


class AlexNet(nn.Module):
    """Five conv layers (96, 256, 384, 384, 256), three max-pools, three FC layers.

    At 224 px the feature maps are 55, 27, 27, 13, 13, 13, 13, 6; the smallest input is 63 px.
    62,378,344 parameters at 1000 classes. Weights start from He et al.'s init (`init_he`).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * POOLED_SIZE[0] * POOLED_SIZE[1], 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(pool_if_needed(self.avgpool, self.features(x)), 1))


@register_model("alexnet", min_size={"imagenet": 63})
def alexnet(num_classes: int = 1000, variant: str = "imagenet", dropout: float = 0.5) -> AlexNet:
    """Build AlexNet; it has only the ImageNet variant (small images are upscaled to 64 px)."""
    return AlexNet(num_classes=num_classes, dropout=dropout)
