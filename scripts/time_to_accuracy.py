"""Best validation top-1 in 10 epochs on 2,000 real CIFAR-10 images, and the wall time it takes.

    python scripts/time_to_accuracy.py ../shared/data/cifar10-jpeg
    python scripts/time_to_accuracy.py ../shared/data/cifar10-jpeg \\
        --variant "no zero-init=model.zero_init_residual=false" --variant "default="

From a CIFAR-10 JPEG folder (`<DATA_DIR>/train/<class>/*.jpg`, or the class folders themselves)
it takes the first 200 files by name of each class for training and a fixed 50 of the rest of
each class (every tenth file after them) for validation, copies them into a class-folder tree,
and trains ResNet-34 with the ImageNet stem at 64 px, batch 64, SGD at LR 0.1 with a cosine
schedule for 10 epochs: the side-by-side setting in which timm's train.py reached 42.2% best top-1.
Each `--variant NAME=OVERRIDES` (space-separated cnn-train overrides) is one run, one after the
other in this process's machine; the table gives each epoch's validation top-1 and wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TRAIN_PER_CLASS = 200
VAL_PER_CLASS = 50
VAL_STRIDE = 10  # every tenth file after the training ones: spread over the class, fixed
COMMAND = [
    "model=resnet34",
    "model.variant=imagenet",
    "data=folder",
    "data.image_size=64",
    "data.batch_size=64",
    "optimizer=sgd",
    "optimizer.lr=0.1",
    "scheduler=cosine",
    "trainer.epochs=10",
    "device=cpu",
    "tracking.graph=false",
    "tracking.image_grid=false",
]


def class_folders(data_dir: Path) -> list[Path]:
    """The class folders under DATA_DIR (or under DATA_DIR/train)."""
    root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    if len(folders) < 2:
        sys.exit(f"error: {root} holds no class folders; pass the CIFAR-10 JPEG folder")
    return folders


def make_subset(data_dir: Path, target: Path) -> None:
    """Copy the fixed train/val subset into `target/train/<class>` and `target/val/<class>`."""
    for folder in class_folders(data_dir):
        files = sorted(folder.glob("*.jpg"))
        rest = files[TRAIN_PER_CLASS:][::VAL_STRIDE][:VAL_PER_CLASS]
        if len(rest) < VAL_PER_CLASS:
            sys.exit(f"error: {folder} holds {len(files)} images; it needs 700 or more")
        for split, chosen in (("train", files[:TRAIN_PER_CLASS]), ("val", rest)):
            (target / split / folder.name).mkdir(parents=True)
            for file in chosen:
                shutil.copyfile(file, target / split / folder.name / file.name)


def train(name: str, overrides: list[str], data_root: Path, run_dir: Path) -> dict:
    """One cnn-train run; its epochs' validation top-1 and times, its best and its wall time."""
    command = [
        sys.executable,
        "-m",
        "cnn_train.cli",
        *COMMAND,
        f"data.root={data_root}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"error: variant {name!r} failed: {done.stderr.strip().splitlines()[-1:]}")
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "name": name,
        "overrides": overrides,
        "val_acc1": [epoch["val_acc1"] for epoch in epochs],
        "epoch_time_s": [epoch["epoch_time_s"] for epoch in epochs],
        "train_loss": [epoch["train_loss"] for epoch in epochs],
        "best": max(epoch["val_acc1"] for epoch in epochs),
        "wall_s": wall,
    }


def print_table(results: list[dict]) -> None:
    """Per epoch: each variant's validation top-1 (and first-epoch loss); then best and times."""
    names = [result["name"] for result in results]
    print("| epoch | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for epoch in range(max(len(result["val_acc1"]) for result in results)):
        cells = [
            f"{result['val_acc1'][epoch]:.1%}" if epoch < len(result["val_acc1"]) else ""
            for result in results
        ]
        print(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    rows = {
        "best top-1": [f"**{result['best']:.1%}**" for result in results],
        "epoch-1 train loss": [f"{result['train_loss'][0]:.2f}" for result in results],
        "s per epoch (mean)": [
            f"{sum(result['epoch_time_s']) / len(result['epoch_time_s']):.1f}" for result in results
        ],
        "wall s (whole run)": [f"{result['wall_s']:.0f}" for result in results],
    }
    for label, cells in rows.items():
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="the CIFAR-10 JPEG folder")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='"NAME=OVERRIDES": a run with these cnn-train overrides (default: one, the defaults)',
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    variants = [item.partition("=") for item in args.variant] or [("cnn-train", "", "")]
    capabilities = torch.cpu.get_capabilities()
    print(
        f"CPU: {capabilities.get('cpu_name', '?')}, {torch.get_num_threads()} threads, "
        f"avx512_bf16={capabilities.get('avx512_bf16')}, amx_bf16={capabilities.get('amx_bf16')}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        data_root = Path(scratch) / "cifar10-subset"
        make_subset(args.data_dir, data_root)
        results = []
        for name, _, overrides in variants:
            run_dir = Path(scratch) / f"run-{len(results)}"
            results.append(train(name, overrides.split(), data_root, run_dir))
            print(f"{name}: best {results[-1]['best']:.1%} in {results[-1]['wall_s']:.0f} s")
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
