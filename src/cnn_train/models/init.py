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


def init_he(model: nn.Module) -> None:
    """He et al. (2015): every convolution and hidden linear layer N(0, 2 / fan_in), biases 0.

    Each ReLU layer then keeps the scale of its input, so the images stay apart up to the
    classifier; the last linear layer is N(0, 0.01), so training starts near uniform predictions.
    AlexNet's own N(0, 0.01) with unit biases does not carry small inputs that far: at 64 px its
    maps are 1x1 by conv5 and the biases swamp what differs between images.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    nn.init.normal_(layers[-1].weight, 0, 0.01)
