"""Does `trainer.compile=true` pay on this machine? The default job per model, compiled or not.

    python scripts/bench_compile.py                       # resnet34, vgg16, alexnet on digits
    python scripts/bench_compile.py --models resnet34 --epochs 30 -- data.batch_size=64

Each run is `cnn-train model=<m> trainer.compile=<on|off>` in its own process, on digits at the
model's smallest size (ResNet-34 8 px, VGG16 32 px, AlexNet 64 px), for the default job's epochs.
The wall time includes compiling (the training graph and the evaluation graph); `break-even`
is the number of epochs after which compiling would have paid, from the steady epoch times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(model: str, compile_model: bool, epochs: int | None, overrides: list[str]) -> dict:
    """One cnn-train run: wall time, steady images/s and epoch time, best val top-1."""
    executable = Path(sys.executable).with_name("cnn-train")
    with tempfile.TemporaryDirectory() as folder:
        command = [
            str(executable),
            f"model={model}",
            f"trainer.compile={str(compile_model).lower()}",
            f"hydra.run.dir={folder}/run",
            *([f"trainer.epochs={epochs}"] if epochs else []),
            *overrides,
        ]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        lines = (Path(folder) / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    steady = records[1:] or records
    return {
        "wall_s": wall,
        "images_per_sec": statistics.median(r["images_per_sec"] for r in steady),
        "epoch_s": statistics.median(r["epoch_time_s"] for r in steady),
        "first_epoch_s": records[0]["epoch_time_s"],
        "epochs": len(records),
        "best_val_acc1": max(r["val_acc1"] for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet34", "vgg16", "alexnet"])
    parser.add_argument("--epochs", type=int, default=None, help="default: the default job's")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args()
    print(
        f"{'model':<10} {'compile':<8} {'wall s':>8} {'1st epoch s':>12} {'epoch s':>8} "
        f"{'img/s':>8} {'val top-1':>10} {'break-even':>11}"
    )
    for model in args.models:
        off = run(model, False, args.epochs, args.overrides)
        on = run(model, True, args.epochs, args.overrides)
        saved_per_epoch = off["epoch_s"] - on["epoch_s"]
        overhead = on["wall_s"] - off["wall_s"] + saved_per_epoch * on["epochs"]
        even = f"{overhead / saved_per_epoch:.0f} epochs" if saved_per_epoch > 0 else "never"
        for name, result in (("off", off), ("on", on)):
            print(
                f"{model:<10} {name:<8} {result['wall_s']:>8.1f} {result['first_epoch_s']:>12.1f} "
                f"{result['epoch_s']:>8.2f} {result['images_per_sec']:>8.1f} "
                f"{result['best_val_acc1']:>10.4f} {even if name == 'on' else '':>11}",
                flush=True,
            )


if __name__ == "__main__":
    main()
