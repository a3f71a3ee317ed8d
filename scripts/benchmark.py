"""Training throughput side by side: cnn-train's loop against a bare loop of the same settings, and
cnn-train's default settings against the plain fp32 loop of a hand-written script.

    python scripts/benchmark.py                      # the four arms below, 3 repeats
    python scripts/benchmark.py --models resnet34 alexnet vgg16 --repeats 5
    python scripts/benchmark.py --end-to-end         # also: wall time of the default job

Arms, each run in its own process (so peak memory is per arm):
  loop     cnn-train's real `fit` (in-memory data, autocast, optimizer, schedule, tqdm,
           TensorBoard, metrics.jsonl) on digits, batch 64
  bare     the same model, batch, precision, memory format and optimizer in a bare loop over
           tensors already in memory
  default  cnn-train's `fit` with its default settings (precision, memory format, ...) on
           ResNet-34 with the ImageNet stem at 64 px, batch 64, data in memory
  plain    what a hand-written script gets: torchvision's resnet34, fp32, NCHW, SGD, over
           64 px batches of 64 already in memory
Every arm times equal chunks of steps (the loop arms: their epochs after the first; the bare arms:
as many steps each), and reports the median chunk. The arms of a pair run next to each other, in
alternating order; a ratio is the median over repeats of the pair's ratio, shown with its range.
The last two lines are `default/plain ratio: X.XX` and `loop/bare ratio: X.XXX`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZE = 64  # the default/plain pair: ResNet-34 (ImageNet stem) at 64 px
WARMUP_STEPS = 5


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="cnn_train.configs", version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _fit_speeds(overrides: list[str]) -> dict:
    """Run a cnn-train training job; the images/s of every epoch after the first."""
    from cnn_train.engine.trainer import run_training

    cfg = _compose(overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        run_training(cfg, Path(run_dir))
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    speeds = [json.loads(line)["images_per_sec"] for line in lines[1:]]
    return {"images_per_sec": statistics.median(speeds), "peak_rss_mb": _peak_rss_mb()}


def _timed_chunks(
    step: Callable[[], None], device: torch.device, chunk: int, chunks: int
) -> list[float]:
    """Seconds per chunk of `chunk` steps, after a warmup."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(WARMUP_STEPS):
        step()
    times = []
    for _ in range(chunks):
        sync()
        start = time.perf_counter()
        for _ in range(chunk):
            step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _step_function(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    autocast: Callable[[], object],
) -> Callable[[], None]:
    import torch

    criterion = torch.nn.CrossEntropyLoss()

    def step() -> None:
        with autocast():
            loss = criterion(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def arm_loop(args: argparse.Namespace, model: str) -> dict:
    """cnn-train's real loop on `args.data` (digits by default)."""
    overrides = [
        f"model={model}",
        f"data={args.data}",
        f"data.batch_size={args.batch_size}",
        f"trainer.epochs={args.chunks + 1}",
        *args.overrides,
    ]
    return _fit_speeds(overrides)


def arm_bare(args: argparse.Namespace, model: str) -> dict:
    """The loop arm's model, batch, precision, memory format and optimizer, in a bare loop."""
    import torch

    from cnn_train.build import build_model_and_data
    from cnn_train.distributed import resolve_device
    from cnn_train.engine.precision import resolve_precision, use_channels_last
    from cnn_train.models import get_spec
    from cnn_train.optim import build_optimizer

    overrides = [f"model={model}", f"data={args.data}", f"data.batch_size={args.batch_size}"]
    cfg = _compose([*overrides, *args.overrides])
    built = build_model_and_data(cfg.model, cfg.data)
    device = resolve_device(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the loop sets it
    precision = resolve_precision(cfg.trainer.precision, device)
    spec = get_spec(cfg.model.name)
    channels_last = use_channels_last(cfg.trainer.channels_last, device, spec, built.image_size)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = built.model.to(device, memory_format=memory_format).train()
    size, batch = built.image_size, args.batch_size
    images = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=memory_format
    )
    labels = torch.randint(0, built.num_classes, (batch,), device=device)
    optimizer = build_optimizer(cfg.optimizer, net)  # the same update arithmetic as the loop
    step = _step_function(net, optimizer, images, labels, precision.autocast)
    per_epoch = len(built.dataset.splits["train"]) // batch  # a chunk is one of the loop's epochs
    times = _timed_chunks(step, device, per_epoch, args.chunks)
    speed = statistics.median(per_epoch * batch / seconds for seconds in times)
    return {"images_per_sec": speed, "peak_rss_mb": _peak_rss_mb()}


def arm_default(args: argparse.Namespace, model: str) -> dict:
    """cnn-train's default settings on ResNet-34 at 64 px, batch 64, data in memory."""
    batch = args.batch_size
    overrides = [
        "model=resnet34",
        "data=synthetic",
        f"data.native_size={DEFAULT_SIZE}",
        f"data.train_samples={batch * args.default_steps}",
        f"data.val_samples={batch}",
        f"data.batch_size={batch}",
        f"trainer.epochs={args.chunks + 1}",
        *args.default_overrides,
    ]
    return _fit_speeds(overrides)


def arm_plain(args: argparse.Namespace, model: str) -> dict:
    """The plain fp32 NCHW torchvision loop of a hand-written script."""
    import contextlib

    import torch
    import torchvision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = device.type == "cuda"
    torch.manual_seed(0)
    net = torchvision.models.resnet34(num_classes=10).to(device).train()
    batch = args.batch_size
    images = torch.randn(batch, 3, DEFAULT_SIZE, DEFAULT_SIZE, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    step = _step_function(net, optimizer, images, labels, contextlib.nullcontext)
    times = _timed_chunks(step, device, args.default_steps, args.chunks)
    speed = statistics.median(args.default_steps * batch / seconds for seconds in times)
    return {"images_per_sec": speed, "peak_rss_mb": _peak_rss_mb()}


ARMS = {"loop": arm_loop, "bare": arm_bare, "default": arm_default, "plain": arm_plain}


def run_arm(arm: str, args: argparse.Namespace, model: str) -> dict:
    """Run one arm in a fresh process; its result."""
    command = [
        sys.executable,
        __file__,
        "--arm",
        arm,
        "--models",
        model,
        "--data",
        args.data,
        "--batch-size",
        str(args.batch_size),
        "--chunks",
        str(args.chunks),
        "--default-steps",
        str(args.default_steps),
        "--default-overrides",
        *args.default_overrides,
        "--",
        *args.overrides,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{arm} arm failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_pair(first: str, second: str, args: argparse.Namespace, model: str) -> list[dict]:
    """`repeats` runs of two arms next to each other, alternating which goes first."""
    runs = []
    for repeat in range(args.repeats):
        order = (first, second) if repeat % 2 == 0 else (second, first)
        results = {arm: run_arm(arm, args, model) for arm in order}
        runs.append({"a": results[first], "b": results[second]})
    return runs


def summarize(runs: list[dict]) -> dict[str, float]:
    """Medians of both arms and of their per-repeat ratio, with the ratio's range."""
    ratios = [run["a"]["images_per_sec"] / run["b"]["images_per_sec"] for run in runs]
    median = lambda arm, key: statistics.median(run[arm][key] for run in runs)  # noqa: E731
    return {
        "a": median("a", "images_per_sec"),
        "b": median("b", "images_per_sec"),
        "ratio": statistics.median(ratios),
        "low": min(ratios),
        "high": max(ratios),
        "a_mb": median("a", "peak_rss_mb"),
        "b_mb": median("b", "peak_rss_mb"),
    }


def end_to_end() -> float:
    """Wall time of `cnn-train` with no arguments, in seconds."""
    executable = Path(sys.executable).with_name("cnn-train")
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        subprocess.run([str(executable)], cwd=cwd, check=True, capture_output=True)
        return time.perf_counter() - start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet34"], help="loop/bare models")
    parser.add_argument("--data", default="digits", help="loop/bare dataset")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=3, help="timed epochs (chunks) per arm")
    parser.add_argument("--default-steps", type=int, default=6, help="default/plain chunk steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--default-plain", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--default-overrides", nargs="*", default=[], help="e.g. trainer.precision=fp32"
    )
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for loop and bare")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.arm:
        sys.path.insert(0, str(REPO / "src"))
        print(json.dumps(ARMS[args.arm](args, args.models[0])))
        return
    print(
        f"{'arms':<24} {'img/s':>8} {'img/s':>8} {'ratio':>7} {'range':>13} {'MB':>6} {'MB':>6}"
        f"   (batch {args.batch_size}, medians of {args.repeats} repeats x {args.chunks} chunks)"
    )
    ratios = []
    for model in args.models:
        row = summarize(run_pair("loop", "bare", args, model))
        ratios.append(row["ratio"])
        _print_row(f"loop/bare {model} {args.data}", row, 3)
    if args.default_plain:
        row = summarize(run_pair("default", "plain", args, "resnet34"))
        _print_row(f"default/plain resnet34 {DEFAULT_SIZE}px", row, 2)
    if args.end_to_end:
        print(f"default job end to end: {end_to_end():.1f} s")
    if args.default_plain:
        print(f"default/plain ratio: {row['ratio']:.2f}")
    print(f"loop/bare ratio: {statistics.median(ratios):.3f}")


def _print_row(name: str, row: dict[str, float], digits: int) -> None:
    spread = f"{row['low']:.{digits}f}-{row['high']:.{digits}f}"
    print(
        f"{name:<24} {row['a']:>8.1f} {row['b']:>8.1f} {row['ratio']:>7.{digits}f} "
        f"{spread:>13} {row['a_mb']:>6.0f} {row['b_mb']:>6.0f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
