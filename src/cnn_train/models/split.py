"""AlexNet's two-device split: tower 0 on one device, tower 1 on another, as in the 2012 paper.

Activations cross between the devices only where the paper's arrows cross: into conv3, FC6,
FC7 and FC8 (FC8 lives with tower 0). The split module's `state_dict()` and `load_state_dict()`
speak the grouped form of `AlexNet2012`, so checkpoints load into either form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnn_train.errors import UserError
from cnn_train.models.alexnet2012 import POOLED_SIZE, TOWERS, AlexNet2012, local_response_norm
from cnn_train.models.pooling import pool_if_needed
from cnn_train.models.registry import split_devices

# Each tower holds one half (along the output dimension) of these grouped layers.
TOWER_LAYERS = {
    "conv1": "features.conv1",
    "conv2": "features.conv2",
    "conv3": "features.conv3",
    "conv4": "features.conv4",
    "conv5": "features.conv5",
    "fc6": "classifier.fc6",
    "fc7": "classifier.fc7",
}
SHARED_LAYERS = {"fc8": "classifier.fc8"}
PARAMETERS = ("weight", "bias")


class Tower(nn.Module):
    """One tower's half of every layer; the methods are the stretches between two crossings."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        half = TOWERS  # each tower holds half of every layer's kernels
        self.conv1 = nn.Conv2d(3, 96 // half, kernel_size=11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(96 // half, 256 // half, kernel_size=5, padding=2)
        self.conv3 = nn.Conv2d(256, 384 // half, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384 // half, 384 // half, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(384 // half, 256 // half, kernel_size=3, padding=1)
        self.fc6 = nn.Linear(256 * POOLED_SIZE[0] * POOLED_SIZE[1], 4096 // half)
        self.fc7 = nn.Linear(4096, 4096 // half)
        self.norm = local_response_norm()
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.dropout = nn.Dropout(p=dropout)

    def conv1_to_pool2(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.norm(F.relu(self.conv1(x))))
        return self.pool(self.norm(F.relu(self.conv2(x))))

    def conv3_to_pool5(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv4(F.relu(self.conv3(x))))
        x = self.pool(F.relu(self.conv5(x)))
        return torch.flatten(pool_if_needed(self.avgpool, x), 1)

    def fc6_layer(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.relu(self.fc6(x)))

    def fc7_layer(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.relu(self.fc7(x)))


class SplitAlexNet(nn.Module):
    """`AlexNet2012` with tower 0 on `devices[0]` and tower 1 on `devices[1]`.

    Takes its input on `input_device` and returns logits on `output_device` (both `devices[0]`).
    """

    def __init__(self, devices: Sequence[torch.device], num_classes: int, dropout: float) -> None:
        super().__init__()
        self.devices = [torch.device(device) for device in devices]
        self.towers = nn.ModuleList(Tower(dropout).to(device) for device in self.devices[:TOWERS])
        self.fc8 = nn.Linear(4096, num_classes).to(self.devices[0])
        self.register_state_dict_post_hook(_to_grouped_hook)
        self.register_load_state_dict_pre_hook(_from_grouped_hook)

    @property
    def input_device(self) -> torch.device:
        return self.devices[0]

    @property
    def output_device(self) -> torch.device:
        return self.devices[0]

    def _cross(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Give each tower both towers' maps, in tower order (the paper's crossing arrows)."""
        return [torch.cat([part.to(device) for part in parts], dim=1) for device in self.devices]

    def _each(
        self, stage: Callable[[Tower, torch.Tensor], torch.Tensor], parts: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        return [stage(tower, part) for tower, part in zip(self.towers, parts, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self._each(Tower.conv1_to_pool2, [x.to(device) for device in self.devices])
        parts = self._each(Tower.conv3_to_pool5, self._cross(parts))
        parts = self._each(Tower.fc6_layer, self._cross(parts))
        parts = self._each(Tower.fc7_layer, self._cross(parts))
        return self.fc8(torch.cat([part.to(self.output_device) for part in parts], dim=1))


def split_state_dict(grouped: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A grouped `AlexNet2012` state_dict (or gradients) in the split module's keys."""
    split: dict[str, torch.Tensor] = {}
    for layer, path in TOWER_LAYERS.items():
        for parameter in PARAMETERS:
            halves = grouped[f"{path}.{parameter}"].chunk(TOWERS, dim=0)
            for index, half in enumerate(halves):
                split[f"towers.{index}.{layer}.{parameter}"] = half
    for layer, path in SHARED_LAYERS.items():
        for parameter in PARAMETERS:
            split[f"{layer}.{parameter}"] = grouped[f"{path}.{parameter}"]
    return split


def group_state_dict(split: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The split module's state_dict (or gradients) in grouped `AlexNet2012` keys, on one device."""
    home = split["fc8.weight"].device
    grouped: dict[str, torch.Tensor] = {}
    for layer, path in TOWER_LAYERS.items():
        for parameter in PARAMETERS:
            halves = [split[f"towers.{i}.{layer}.{parameter}"].to(home) for i in range(TOWERS)]
            grouped[f"{path}.{parameter}"] = torch.cat(halves, dim=0)
    for layer, path in SHARED_LAYERS.items():
        for parameter in PARAMETERS:
            grouped[f"{path}.{parameter}"] = split[f"{layer}.{parameter}"]
    return grouped


def _to_grouped_hook(
    module: nn.Module, state: dict[str, torch.Tensor], prefix: str, local_metadata: dict
) -> None:
    own = {key[len(prefix) :]: state.pop(key) for key in list(state) if key.startswith(prefix)}
    state.update({prefix + key: value for key, value in group_state_dict(own).items()})


def _from_grouped_hook(
    module: nn.Module, state: dict[str, torch.Tensor], prefix: str, *args: object
) -> None:
    own = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    if f"{SHARED_LAYERS['fc8']}.weight" not in own:
        return
    for key in own:
        del state[prefix + key]
    state.update({prefix + key: value for key, value in split_state_dict(own).items()})


def split_alexnet(model: nn.Module, devices: Sequence[torch.device | str]) -> SplitAlexNet:
    """Split an `AlexNet2012` over two devices, keeping its weights (device=alexnet_split).

    The result is already placed: feed it batches on its `input_device`; do not `.to()` it.
    """
    if not isinstance(model, AlexNet2012):
        raise UserError("device=alexnet_split needs model=alexnet2012; use model=alexnet2012")
    split = SplitAlexNet(
        split_devices(devices),
        num_classes=model.classifier.fc8.out_features,
        dropout=model.classifier.drop6.p,
    )
    split.load_state_dict(model.state_dict())
    return split.train(model.training)
