"""AlexNet as in the 2012 paper: two towers, Local Response Normalization, overlapping pooling.

On one device the two towers are the grouped-convolution form: conv2, conv4 and conv5 have
`groups=2`, so each half of their kernels sees only its own tower's maps, while conv1, conv3 and
the FC layers see both towers. `cnn_train.models.split` places the towers on two devices.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from cnn_train.models.init import init_he
from cnn_train.models.pooling import pool_if_needed
from cnn_train.models.registry import register_model

TOWERS = 2
POOLED_SIZE = (6, 6)
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
LRN_K = 2.0


def local_response_norm() -> nn.LocalResponseNorm:
    """The paper's LRN: b = a / (k + alpha * sum of a^2 over 5 adjacent maps)^beta.

    torch divides alpha by the window size; the paper's formula does not, so it is scaled back.
    """
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)


class TowerLocalResponseNorm(nn.Module):
    """LRN within each tower's maps: on two GPUs a map's neighbours never came from the other."""

    def __init__(self, towers: int = TOWERS) -> None:
        super().__init__()
        self.towers = towers
        self.norm = local_response_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        per_tower = x.reshape(batch * self.towers, channels // self.towers, height, width)
        return self.norm(per_tower).reshape(batch, channels, height, width)


class AlexNet2012(nn.Module):
    """The two-tower network of Krizhevsky, Sutskever and Hinton (2012) in grouped form.

    conv1 96@11x11/4 (48 per tower), ReLU, LRN, max-pool 3/2; conv2 256@5x5 (groups=2), ReLU, LRN,
    max-pool; conv3 384@3x3 (sees both towers); conv4 384@3x3 and conv5 256@3x3 (groups=2), ReLU,
    max-pool to 256x6x6; FC6 and FC7 of 4096 (two 2048-d halves, each seeing both towers) with
    ReLU and dropout on their outputs; FC8. 60,965,224 parameters at 1000 classes; the smallest
    input is 63 px (inputs other than 224 px are average-pooled to 6x6 before FC6). Weights start
    from He et al.'s init (`init_he`), not the paper's N(0, 0.01) with unit biases, which does
    not train on small inputs.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=2),
                relu1=nn.ReLU(inplace=True),
                norm1=TowerLocalResponseNorm(),
                pool1=nn.MaxPool2d(kernel_size=3, stride=2),
                conv2=nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=TOWERS),
                relu2=nn.ReLU(inplace=True),
                norm2=TowerLocalResponseNorm(),
                pool2=nn.MaxPool2d(kernel_size=3, stride=2),
                conv3=nn.Conv2d(256, 384, kernel_size=3, padding=1),
                relu3=nn.ReLU(inplace=True),
                conv4=nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=TOWERS),
                relu4=nn.ReLU(inplace=True),
                conv5=nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=TOWERS),
                relu5=nn.ReLU(inplace=True),
                pool5=nn.MaxPool2d(kernel_size=3, stride=2),
            )
        )
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc6=nn.Linear(256 * POOLED_SIZE[0] * POOLED_SIZE[1], 4096),
                relu6=nn.ReLU(inplace=True),
                drop6=nn.Dropout(p=dropout),
                fc7=nn.Linear(4096, 4096),
                relu7=nn.ReLU(inplace=True),
                drop7=nn.Dropout(p=dropout),
                fc8=nn.Linear(4096, num_classes),
            )
        )
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(pool_if_needed(self.avgpool, self.features(x)), 1))


def split_alexnet2012(model: nn.Module, devices: Sequence[torch.device | str]) -> nn.Module:
    """Tower 0 on `devices[0]`, tower 1 on `devices[1]` (`cnn_train.models.split`)."""
    from cnn_train.models.split import split_alexnet  # split.py builds on this module

    return split_alexnet(model, devices)


@register_model("alexnet2012", min_size={"imagenet": 63}, split=split_alexnet2012)
def alexnet2012(
    num_classes: int = 1000, variant: str = "imagenet", dropout: float = 0.5
) -> AlexNet2012:
    """Build the paper's two-tower AlexNet (ImageNet variant only; small images are upscaled)."""
    return AlexNet2012(num_classes=num_classes, dropout=dropout)
