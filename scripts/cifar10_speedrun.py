"""Time to 94% held-out top-1 for ResNet-34 on CIFAR-10 (the JPEG class folders), on one GPU.

    # here: pack the 50,000 JPEGs into one file (~47 MB) that travels to a GPU machine
    python scripts/cifar10_speedrun.py pack --root ../shared/data/cifar10-jpeg/train
    # there: decode once on the GPU, keep the images there, train with cnn-train's own loop
    python scripts/cifar10_speedrun.py run
    # a quick check of the same path on the CPU with a subset
    python scripts/cifar10_speedrun.py run --per-class 100 --epochs 2 --batch-size 64 -- device=cpu

The run uses cnn-train's trainer (Hydra compose from `configs/`, `fit`), with the images decoded
once (torchvision.io.decode_jpeg, on the GPU when there is one) and held as one uint8 tensor on the
device, the batched `cifar` augmentation, bf16 and channels_last (`trainer.precision=auto` and
`trainer.channels_last=null` on a GPU). 5,000 images (500 per class, fixed) are held out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACK = REPO / "data-cache" / "cifar10_jpeg_pack.pt"
HELD_OUT_PER_CLASS = 500
RECIPE = [  # the recipe's cosine schedule, shortened, with warmup, label smoothing, a large batch
    "experiment=resnet34_cifar10",
    "scheduler.warmup_epochs=2",
    "optimizer.lr=0.4",
    "optimizer.nesterov=true",
    "trainer.label_smoothing=0.1",
    "tracking.graph=false",
    "tracking.image_grid=false",
]


def pack(root: Path, output: Path) -> None:
    """Concatenate every JPEG's bytes into one tensor with offsets, labels and class names."""
    classes = sorted(path.name for path in root.iterdir() if path.is_dir())
    chunks, offsets, labels = [], [0], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).glob("*.jpg")):
            data = file.read_bytes()
            chunks.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            offsets.append(offsets[-1] + len(data))
            labels.append(label)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "data": torch.cat(chunks),
            "offsets": torch.tensor(offsets),
            "labels": torch.tensor(labels),
            "classes": classes,
        },
        output,
    )
    print(f"packed {len(labels)} images of {len(classes)} classes into {output}")


def decode(packed: dict, device: torch.device, per_class: int | None) -> dict:
    """Decode the packed JPEGs once (on `device` when it is a GPU) into uint8 [N, 3, 32, 32]."""
    from torchvision.io import ImageReadMode, decode_jpeg

    labels = packed["labels"]
    keep = torch.arange(len(labels))
    if per_class:
        keep = torch.cat([torch.nonzero(labels == c)[:per_class, 0] for c in labels.unique()])
    offsets = packed["offsets"]
    files = [packed["data"][offsets[i] : offsets[i + 1]] for i in keep.tolist()]
    where = "cuda" if device.type == "cuda" else "cpu"
    images = []
    for start in range(0, len(files), 4096):
        batch = decode_jpeg(files[start : start + 4096], mode=ImageReadMode.RGB, device=where)
        images.append(torch.stack(batch))
    return {"images": torch.cat(images).to(device), "labels": labels[keep].to(device)}


def held_out_split(labels: torch.Tensor, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed stratified split: the first `per_class` of each class (after a seeded shuffle)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    labels_cpu = labels.cpu()[order]
    val = torch.cat([order[labels_cpu == c][:per_class] for c in labels_cpu.unique()])
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[val] = False
    return torch.nonzero(mask)[:, 0], val


def run(args: argparse.Namespace) -> None:
    """Train with cnn-train's loop on the decoded tensor; report the time to the target."""
    sys.path.insert(0, str(REPO / "src"))
    from cnn_train.cli import compose_config
    from cnn_train.data import InMemoryDataset, LabelledImages, register_dataset
    from cnn_train.engine.trainer import run_training

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    packed = torch.load(args.pack, weights_only=True)
    decoded = decode(packed, device, args.per_class)
    held_out = min(HELD_OUT_PER_CLASS, (args.per_class or 5000) // 10)
    train_index, val_index = held_out_split(decoded["labels"], held_out)
    train_index, val_index = train_index.to(device), val_index.to(device)
    decode_s = time.perf_counter() - start
    images, labels = decoded["images"], decoded["labels"]
    train_float = images.index_select(0, train_index).float().div_(255)
    mean = tuple(train_float.mean(dim=(0, 2, 3)).tolist())
    std = tuple(train_float.std(dim=(0, 2, 3)).tolist())
    del train_float
    dataset = InMemoryDataset(
        splits={
            "train": LabelledImages(images[train_index], labels[train_index]),
            "val": LabelledImages(images[val_index], labels[val_index]),
        },
        class_names=list(packed["classes"]),
        native_size=32,
        mean=mean,
        std=std,
    )
    register_dataset("cifar10_decoded")(lambda cfg: dataset)
    overrides = [
        *RECIPE,
        f"trainer.epochs={args.epochs}",
        f"data.batch_size={args.batch_size}",
        "data.name=cifar10_decoded",
        *args.overrides,
    ]
    cfg = compose_config("train", overrides)
    run_dir = REPO / "outputs" / "cifar10_speedrun" / time.strftime("%Y-%m-%d_%H-%M-%S")
    run_dir.mkdir(parents=True)
    run_training(cfg, run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    elapsed, reached = 0.0, None
    for record in records:
        elapsed += record["epoch_time_s"]
        if reached is None and record["val_acc1"] >= args.target:
            reached = (record["epoch"] + 1, elapsed)
    best = max(record["val_acc1"] for record in records)
    print(
        f"device {device}, {len(train_index)} train / {len(val_index)} held out, "
        f"decode {decode_s:.1f} s, best held-out top-1 {best:.4f}"
    )
    if reached:
        print(f"time to {args.target:.0%}: {reached[1]:.1f} s of training (epoch {reached[0]})")
    else:
        print(f"did not reach {args.target:.0%} in {args.epochs} epochs ({elapsed:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packer = commands.add_parser("pack", help="pack the JPEG folder into one tensor file")
    packer.add_argument("--root", type=Path, required=True)
    packer.add_argument("--output", type=Path, default=PACK)
    runner = commands.add_parser("run", help="decode once and train to the target")
    runner.add_argument("--pack", type=Path, default=PACK)
    runner.add_argument("--epochs", type=int, default=30)
    runner.add_argument("--batch-size", type=int, default=512)
    runner.add_argument("--target", type=float, default=0.94)
    runner.add_argument("--per-class", type=int, default=None, help="a subset, for a quick check")
    runner.add_argument("overrides", nargs="*", help="extra cnn-train overrides")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.root, args.output)
    else:
        run(args)


if __name__ == "__main__":
    main()
