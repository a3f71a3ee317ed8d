"""Pooling to a classifier's input size, and when such pooling has no deterministic backward."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.utils import _pair


def pool_if_needed(pool: nn.AdaptiveAvgPool2d, x: torch.Tensor) -> torch.Tensor:
    """`pool(x)`, or `x` itself where it already has the pooled size.

    At the native input size the maps are already pooled-size; skipping the pool there keeps the
    CUDA backward deterministic (and the layer table shows no pooling that did not happen).
    """
    return x if tuple(x.shape[-2:]) == _pair(pool.output_size) else pool(x)


def adaptive_pooling(model: nn.Module, image_size: int) -> str | None:
    """The op `model` needs at `image_size` that has no deterministic CUDA backward, or None.

    That is adaptive average pooling to more than 1x1 (1x1 is a mean, deterministic), found by a
    forward on the meta device: `pool_if_needed` calls a pool only where it really pools.
    """
    pools = [
        module
        for module in model.modules()
        if isinstance(module, nn.AdaptiveAvgPool2d) and _pair(module.output_size) != (1, 1)
    ]
    if not pools:
        return None
    called: list[nn.Module] = []
    hooks = [pool.register_forward_hook(lambda module, *_: called.append(module)) for pool in pools]
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    meta = {name: torch.empty_like(value, device="meta") for name, value in tensors.items()}
    try:
        # A batch of two: train-mode BatchNorm refuses one value per channel.
        functional_call(model, meta, (torch.empty(2, 3, image_size, image_size, device="meta"),))
    finally:
        for hook in hooks:
            hook.remove()
    return "adaptive average pooling" if called else None
