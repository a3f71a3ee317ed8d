"""Training images/s with and without channels_last (NHWC) per model on this machine's CPU.

    python scripts/bench_channels_last.py         # fp32, and bf16 where the CPU has it natively
    python scripts/bench_channels_last.py --bf16  # bf16 even where it is emulated (slow)

The numbers behind `trainer.channels_last=null` choosing NHWC on the CPU (engine/precision.py).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from cnn_train.engine.precision import cpu_has_native_bf16
from cnn_train.models import build_model

CASES = [
    ("resnet34", "small", 8),
    ("resnet34", "imagenet", 64),
    ("alexnet", "imagenet", 64),
    ("vgg16", "small", 32),
]


def images_per_sec(
    name: str, variant: str, size: int, channels_last: bool, bf16: bool, steps: int = 10
) -> float:
    """Training throughput of one model at batch 64 on random tensors."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = build_model(name, 10, variant).to(memory_format=memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(64, 3, size, size).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (64,))
    criterion = torch.nn.CrossEntropyLoss()

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = criterion(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * 64 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bf16", action="store_true", help="measure bf16 even if emulated")
    args = parser.parse_args()
    precisions = ["fp32"] + (["bf16"] if args.bf16 or cpu_has_native_bf16() else [])
    print(
        f"{'model':<10} {'variant':<9} {'px':>4} {'precision':<9} "
        f"{'NCHW img/s':>11} {'NHWC img/s':>11} {'ratio':>6}"
    )
    for name, variant, size in CASES:
        for precision in precisions:
            bf16 = precision == "bf16"
            runs = [
                (
                    images_per_sec(name, variant, size, False, bf16),
                    images_per_sec(name, variant, size, True, bf16),
                )
                for _ in range(2)
            ]
            nchw, nhwc = max(r[0] for r in runs), max(r[1] for r in runs)
            print(
                f"{name:<10} {variant:<9} {size:>4} {precision:<9} "
                f"{nchw:>11.1f} {nhwc:>11.1f} {nhwc / nchw:>6.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
