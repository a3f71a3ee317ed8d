"""Training throughput of cnn-train's own loop against a bare PyTorch loop, side by side.

    python scripts/benchmark.py                 # ResNet-34 on digits, the default job's setting
    python scripts/benchmark.py --models resnet34 alexnet vgg16 --repeats 5
    python scripts/benchmark.py --end-to-end         # also: wall time of the default job

Each measurement runs in its own subprocess (so peak memory is per arm), in alternating order,
and the figures are medians over the repeats. The last line is `loop/bare ratio: X.XXX`.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def arm_loop(model: str, data: str, batch_size: int, epochs: int, extra: list[str]) -> dict:
    """cnn-train's real loop (data pipeline, autocast, optimizer, schedule, tqdm, TensorBoard)."""
    from hydra import compose, initialize_config_module

    from cnn_train.engine.trainer import fit
    from cnn_train.schema import register_configs

    register_configs()
    overrides = [
        f"model={model}",
        f"data={data}",
        f"data.batch_size={batch_size}",
        f"trainer.epochs={epochs}",
        *extra,
    ]
    with initialize_config_module(config_module="cnn_train.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        fit(cfg, Path(run_dir))
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
    steady = [record["images_per_sec"] for record in records[1:]] or [records[0]["images_per_sec"]]
    return {"images_per_sec": statistics.median(steady), "peak_rss_mb": _peak_rss_mb()}


def arm_bare(model: str, data: str, batch_size: int, steps: int, extra: list[str]) -> dict:
    """The same model, batch and precision in a plain loop over tensors already in memory."""
    import torch
    from hydra import compose, initialize_config_module

    from cnn_train.build import build_model_and_data
    from cnn_train.distributed import resolve_device
    from cnn_train.engine.precision import resolve_precision, use_channels_last
    from cnn_train.optim import build_optimizer
    from cnn_train.schema import register_configs

    register_configs()
    overrides = [f"model={model}", f"data={data}", f"data.batch_size={batch_size}", *extra]
    with initialize_config_module(config_module="cnn_train.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    built = build_model_and_data(cfg.model, cfg.data)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    channels_last = use_channels_last(
        cfg.trainer.channels_last, device, cfg.model.name, built.image_size
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = built.model.to(device, memory_format=memory_format).train()
    size = built.image_size
    images = torch.randn(batch_size, 3, size, size, device=device)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, built.num_classes, (batch_size,), device=device)
    optimizer = build_optimizer(cfg.optimizer, net)  # the same update arithmetic as the loop
    criterion = torch.nn.CrossEntropyLoss()

    def step() -> None:
        with precision.autocast():
            loss = criterion(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"images_per_sec": steps * batch_size / elapsed, "peak_rss_mb": _peak_rss_mb()}


def run_arm(arm: str, args: argparse.Namespace, model: str) -> dict:
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
        "--epochs",
        str(args.epochs),
        "--steps",
        str(args.steps),
        "--",
        *args.overrides,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{arm} arm failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def end_to_end() -> float:
    """Wall time of `cnn-train` with no arguments, in seconds."""
    executable = Path(sys.executable).with_name("cnn-train")
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        subprocess.run([str(executable)], cwd=cwd, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet34"])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="loop arm: epochs (first is warmup)")
    parser.add_argument("--steps", type=int, default=30, help="bare arm: timed steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--arm", choices=["loop", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for both arms")
    args = parser.parse_args()

    if args.arm:
        sys.path.insert(0, str(REPO / "src"))
        model = args.models[0]
        if args.arm == "loop":
            result = arm_loop(model, args.data, args.batch_size, args.epochs, args.overrides)
        else:
            result = arm_bare(model, args.data, args.batch_size, args.steps, args.overrides)
        print(json.dumps(result))
        return

    print(
        f"{'model':<10} {'loop img/s':>11} {'bare img/s':>11} {'ratio':>7} "
        f"{'loop MB':>9} {'bare MB':>9}   (batch {args.batch_size}, {args.data}, "
        f"medians of {args.repeats})"
    )
    ratios = []
    for model in args.models:
        loop, bare = [], []
        for repeat in range(args.repeats):
            order = ("loop", "bare") if repeat % 2 == 0 else ("bare", "loop")
            for arm in order:
                (loop if arm == "loop" else bare).append(run_arm(arm, args, model))
        loop_speed = statistics.median(r["images_per_sec"] for r in loop)
        bare_speed = statistics.median(r["images_per_sec"] for r in bare)
        ratio = loop_speed / bare_speed
        ratios.append(ratio)
        loop_mb = statistics.median(r["peak_rss_mb"] for r in loop)
        bare_mb = statistics.median(r["peak_rss_mb"] for r in bare)
        print(
            f"{model:<10} {loop_speed:>11.1f} {bare_speed:>11.1f} {ratio:>7.3f} "
            f"{loop_mb:>9.0f} {bare_mb:>9.0f}",
            flush=True,
        )
    if args.end_to_end:
        print(f"default job end to end: {end_to_end():.1f} s")
    print(f"loop/bare ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
