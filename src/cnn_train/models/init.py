"""Weight initialisation shared by the plain (BatchNorm-free) networks."""

from __future__ import annotations

from torch import nn


def init_plain_cnn(model: nn.Module) -> None:
    """torchvision's VGG scheme: Kaiming-normal convolutions, N(0, 0.01) linear layers, zero biases.

    Without BatchNorm, PyTorch's default init leaves AlexNet and VGG16 stuck at chance on small
    data; this one trains them from scratch.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)
