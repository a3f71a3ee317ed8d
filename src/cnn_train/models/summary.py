"""The layer table (`cnn-summary`): output shapes, size arithmetic, parameters, FLOPs, all
computed on fake tensors (shapes without data)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from cnn_train.errors import UserError, first_line
from cnn_train.table import text_table

SHOWN = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d)


@dataclass
class LayerRow:
    """One row of the table."""

    name: str
    kind: str
    output: tuple[int, ...]
    arithmetic: str
    towers: str
    params: int
    flops: int


def _pair(value: int | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else value[0]


def size_arithmetic(module: nn.Module, in_side: int, out_side: int) -> str:
    """`(in + 2*pad - kernel)/stride + 1 = out` for a convolution or pooling layer."""
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return ""
    kernel, stride = _pair(module.kernel_size), _pair(module.stride)
    pad = _pair(module.padding) if not isinstance(module.padding, str) else 0
    dilation = _pair(getattr(module, "dilation", 1))
    span = dilation * (kernel - 1) + 1
    numerator = in_side + 2 * pad - span
    kernel_text = str(kernel) if dilation == 1 else f"{dilation}*({kernel}-1)+1"
    division = f"({in_side} + 2*{pad} - {kernel_text})/{stride}"
    if numerator % stride:
        rounding = "ceil" if getattr(module, "ceil_mode", False) else "floor"
        division = f"{rounding}({division})"
    return f"{division} + 1 = {out_side}"


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        kernel, stride = _pair(module.kernel_size), _pair(module.stride)
        text = f"conv {module.out_channels}@{kernel}x{kernel} s{stride} p{_pair(module.padding)}"
        return text + (f" g{module.groups}" if module.groups > 1 else "")
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
        return f"{kind} {_pair(module.kernel_size)} s{_pair(module.stride)}"
    if isinstance(module, nn.Linear):
        return f"fc {module.in_features}->{module.out_features}"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return "adaptive avgpool"
    return "batchnorm"


def layer_table(model: nn.Module, image_size: int, channels: int = 3) -> tuple[list[LayerRow], int]:
    """Trace one image's shapes through `model` with fake tensors (no activation is allocated,
    whatever the image size); describe every conv, pool, norm and linear layer.

    Returns the rows and the FLOPs of the whole forward pass.
    """
    rows: list[LayerRow] = []
    names = {module: name for name, module in model.named_modules()}
    root = type(model).__name__

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        side_in = inputs[0].shape[-1] if inputs[0].dim() == 4 else 0
        side_out = output.shape[-1] if output.dim() == 4 else 0
        groups = getattr(module, "groups", 1)
        towers = ""
        if groups > 1:
            towers = f"{groups} x " + "x".join(
                str(v) for v in (output.shape[1] // groups, *output.shape[2:])
            )
        rows.append(
            LayerRow(
                name=names[module],
                kind=_describe(module),
                output=tuple(output.shape[1:]),
                arithmetic=size_arithmetic(module, side_in, side_out),
                towers=towers,
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                flops=0,
            )
        )

    hooks = [
        module.register_forward_hook(record)
        for module in model.modules()
        if isinstance(module, SHOWN)
    ]
    model.eval()
    try:
        # Fake tensors carry shapes, not data: no activation is allocated at any image size.
        with (
            torch.no_grad(),
            FakeTensorMode(allow_non_fake_inputs=True),
            FlopCounterMode(display=False) as counter,
        ):
            model(torch.zeros(1, channels, image_size, image_size))
    except (RuntimeError, NotImplementedError, TypeError) as error:
        raise UserError(
            f"cannot compute the layer table of {root} at {image_size} px without running it: "
            f"{first_line(error, type(error).__name__)}"
        ) from error
    finally:
        for hook in hooks:
            hook.remove()
    counts = counter.get_flop_counts()
    for row in rows:
        row.flops = int(sum(counts.get(f"{root}.{row.name}", {}).values()))
    return rows, int(counter.get_total_flops())


def _count(value: int) -> str:
    return f"{value:,}" if value else "-"


def format_layer_table(model: nn.Module, image_size: int, title: str) -> str:
    """The printed table with totals (all parameters, all FLOPs of one image's forward pass)."""
    rows, flops = layer_table(model, image_size)
    table = [
        (
            "layer",
            "type",
            "output",
            "size: (in + 2*pad - kernel)/stride + 1",
            "towers",
            "params",
            "FLOPs",
        ),
        ("input", "", f"3x{image_size}x{image_size}", "", "", "", ""),
    ]
    for row in rows:
        table.append(
            (
                row.name,
                row.kind,
                "x".join(str(v) for v in row.output),
                row.arithmetic,
                row.towers,
                _count(row.params),
                _count(row.flops),
            )
        )
    params = sum(p.numel() for p in model.parameters())
    table.append(("total", "", "", "", "", f"{params:,}", f"{flops:,}"))
    keep = [i for i in range(len(table[0])) if any(line[i] for line in table[1:])]
    lines = text_table([[line[i] for i in keep] for line in table])
    rule = "-" * max(len(line) for line in lines)
    footer = (
        f"{params:,} parameters, {flops / 1e9:.3g} GFLOPs per image "
        f"(a multiply-add counts as 2 FLOPs; activation, LRN and dropout layers are not listed)"
    )
    return "\n".join([title, rule, lines[0], rule, *lines[1:-1], rule, lines[-1], "", footer])
