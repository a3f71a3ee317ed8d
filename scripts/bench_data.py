"""Input-pipeline benchmarks, one command: `python scripts/bench_data.py` (add --help for options).

1. In-memory path: a ResNet-34 training step fed by the in-memory loader (uint8 CIFAR-shaped
   tensor, `cifar` batch augmentation) against the same step on pre-made random tensors.
2. Folder path: decoded-and-augmented images per second on one core for the `imagenet` preset,
   ours (torchvision.io.decode_jpeg + v2 transforms) against a plain torchvision ImageFolder with
   PIL transforms, on the same generated 500x375 JPEGs; plus JPEG decoding alone, both ways.
3. With --cifar-root: the data pipeline's share of a `cifar10_folder` training step on real files,
   and 4. the time, memory and rate of decoding them once on every core (as a folder that fits
   `data.decode_budget_mb` is before training).
5. --policies: what each `data.auto_augment` policy (and `data.random_erase`) adds per batch of
   CIFAR-shaped data, on the in-memory path and per image on the worker path, against the
   ResNet-34 (small) training step on --device (the in-memory policy cost is each sample
   augmented alone on the device; the worker path's is one process building a whole batch).

Parts 1-3 run on one thread (images per second per core). Prints one JSON object at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import datasets
from torchvision import transforms as v1
from torchvision.io import ImageReadMode, decode_jpeg

from cnn_train.data.decode import decode_files, read_rgb
from cnn_train.data.folder import scan_folder
from cnn_train.data.loaders import stream_samples
from cnn_train.data.memory import InMemoryLoader, LabelledImages
from cnn_train.data.policies import Augmentation, PolicySettings
from cnn_train.data.preprocessing import EvalPreprocessing
from cnn_train.data.stream import ImageSamples, StreamLoader, collate
from cnn_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize, image_transform
from cnn_train.models import build_model
from cnn_train.schema import AUTO_AUGMENT_POLICIES


def _train_steps(model: nn.Module, batches: Iterable, steps: int) -> float:
    """Seconds for `steps` SGD steps over `batches` (the batch fetch included)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _, (images, labels) in zip(range(steps), batches, strict=False):
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def _cycle(loader: InMemoryLoader) -> Iterable:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def bench_in_memory(batch_size: int, steps: int, rounds: int) -> dict[str, float]:
    """Images per second of the training step: in-memory loader vs pre-made random tensors."""
    count = 4096
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    data = LabelledImages(images, torch.randint(0, 10, (count,), generator=generator))
    loader = InMemoryLoader(
        data,
        image_size=32,
        batch_size=batch_size,
        mean=(0.49, 0.48, 0.45),
        std=(0.25, 0.24, 0.26),
        device=torch.device("cpu"),
        shuffle=True,
        drop_last=True,
        augment="cifar",
    )
    fixed = [
        (torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))) for _ in range(4)
    ]
    model = build_model("resnet34", 10, "small")
    _train_steps(model, iter(fixed), 2)  # warm-up
    stream = _cycle(loader)
    ratios, totals = [], {"loader": 0.0, "random": 0.0}
    for _ in range(rounds):  # interleaved, so drifting load on a shared machine hits both
        with_loader = _train_steps(model, stream, steps)
        with_random = _train_steps(model, (fixed[i % 4] for i in range(steps)), steps)
        ratios.append(with_random / with_loader)
        totals["loader"] += with_loader
        totals["random"] += with_random
    start = time.perf_counter()
    fetched = sum(1 for _, _ in zip(range(50), stream, strict=False))
    fetch_s = (time.perf_counter() - start) / fetched
    step_s = totals["random"] / (rounds * steps)
    return {
        "in_memory_img_per_s": rounds * steps * batch_size / totals["loader"],
        "random_tensor_img_per_s": rounds * steps * batch_size / totals["random"],
        "in_memory_ratio": totals["random"] / totals["loader"],
        "in_memory_ratio_median_round": sorted(ratios)[len(ratios) // 2],
        "in_memory_batch_ms": fetch_s * 1e3,
        "step_ms": step_s * 1e3,
        "in_memory_ratio_bound": step_s / (step_s + fetch_s),
    }


def make_jpegs(root: Path, count: int) -> None:
    """`count` 500x375 JPEGs of smooth random content in two class folders."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        noise = rng.integers(-12, 13, (375, 500, 3))
        pixels = np.clip(np.asarray(image).astype(int) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)


def _rate(count: int, work: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return count / best


def bench_folder(count: int, repeats: int) -> dict[str, float]:
    """Images/s/core: decode + `imagenet` train preset, ours vs ImageFolder + PIL transforms."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_jpegs(root, count)
        files = scan_folder(str(root), 0.5).splits
        paths = files["train"].paths + files["val"].paths
        ours = ImageSamples(
            type(files["train"])(paths, torch.zeros(len(paths), dtype=torch.int64)),
            image_transform("imagenet", 224, train=True),
        )
        baseline = datasets.ImageFolder(
            str(root),
            transform=v1.Compose(
                [
                    v1.RandomResizedCrop(224),
                    v1.RandomHorizontalFlip(),
                    v1.ToTensor(),
                    v1.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                ]
            ),
        )
        norm = Normalize(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))  # counted, to be fair
        blobs = [
            torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in paths
        ]
        return {
            "jpegs": len(paths),
            "ours_img_per_s_per_core": _rate(
                len(paths),
                lambda: [norm(ours[(0, i)][0][None]) for i in range(len(paths))],
                repeats,
            ),
            "imagefolder_pil_img_per_s_per_core": _rate(
                len(paths), lambda: [baseline[i] for i in range(len(paths))], repeats
            ),
            "decode_jpeg_img_per_s": _rate(
                len(paths),
                lambda: [decode_jpeg(b, mode=ImageReadMode.RGB) for b in blobs],
                repeats,
            ),
            "pil_decode_img_per_s": _rate(
                len(paths),
                lambda: [np.asarray(Image.open(p).convert("RGB")) for p in paths],
                repeats,
            ),
            "read_rgb_img_per_s": _rate(len(paths), lambda: [read_rgb(p) for p in paths], repeats),
        }


def bench_cifar_folder(root: str, batch_size: int, steps: int, workers: int) -> dict[str, float]:
    """Share of step time spent waiting for data, `cifar10_folder` at 32 px on real JPEGs."""
    dataset = scan_folder(root, 0.1)
    transform = image_transform("cifar", 32, train=True)
    loader = StreamLoader(
        ImageSamples(dataset.splits["train"], transform),
        batch_size=batch_size,
        device=torch.device("cpu"),
        train=True,
        seed=0,
        num_workers=workers,
        max_bad_fraction=0.01,
        normalize=Normalize(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu")),
    )
    model = build_model("resnet34", len(dataset.class_names), "small")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    wait = compute = 0.0
    batches = iter(loader)
    next(batches)  # worker start-up is not a per-step cost
    for _ in range(steps):
        start = time.perf_counter()
        images, labels = next(batches)
        middle = time.perf_counter()
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        wait, compute = wait + middle - start, compute + time.perf_counter() - middle
    return {
        "cifar_folder_workers": workers,
        "cifar_folder_data_wait_s_per_step": wait / steps,
        "cifar_folder_compute_s_per_step": compute / steps,
        "cifar_folder_data_share": wait / (wait + compute),
    }


def bench_decode_once(root: str, count: int) -> dict[str, float]:
    """Decoding `count` real JPEGs once at 32 px on a pool of every core (a folder that fits
    `data.decode_budget_mb`): seconds, MB held, images/s."""
    paths = scan_folder(root, 0.1).splits["train"].paths[:count]
    threads = len(os.sched_getaffinity(0))
    start = time.perf_counter()
    images, failures = decode_files(paths, 32, threads=threads, desc="decoding")
    seconds = time.perf_counter() - start
    return {
        "decode_once_images": len(paths) - len(failures),
        "decode_once_threads": threads,
        "decode_once_s": seconds,
        "decode_once_mb": images.numel() / 1e6,
        "decode_once_img_per_s": len(paths) / seconds,
    }


POLICY_MEAN, POLICY_STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
POLICIES = {
    **{name: PolicySettings(name) for name in AUTO_AUGMENT_POLICIES},
    "random_erase=0.25": PolicySettings(random_erase=0.25),
    "trivialaugment+erase": PolicySettings("trivialaugment", random_erase=0.25),
}


def _best_ms(work: Callable[[], object], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times) * 1e3  # the fastest: the least disturbed by other load on the machine


def step_ms(device: torch.device, batch_size: int, repeats: int) -> float:
    """One SGD step of ResNet-34 (small) on a ready batch [B, 3, 32, 32]."""
    model = build_model("resnet34", 10, "small").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    return _best_ms(step, repeats, device)


def policy_costs(
    settings: PolicySettings, data: LabelledImages, device: torch.device, batch_size: int
) -> tuple[float, float]:
    """(in-memory ms per batch, worker-path ms per batch) with the `cifar` preset and `settings`."""
    loader = InMemoryLoader(
        data, image_size=32, batch_size=batch_size, mean=POLICY_MEAN, std=POLICY_STD, device=device,
        shuffle=True, drop_last=True, augment="cifar", policies=settings,
    )  # fmt: skip
    batches = iter(loader)
    next(batches)  # warm-up
    in_memory = _best_ms(lambda: next(batches), 8, device)
    evaluation = EvalPreprocessing(32, POLICY_MEAN, POLICY_STD)
    augmentation = Augmentation(policies=settings)
    samples = stream_samples(data, "cifar", 32, augmentation, evaluation, train=True)
    normalize = evaluation.normalizer(torch.device("cpu"))

    def stream_batch() -> None:
        images, _, _, _ = collate([samples[(index, index)] for index in range(batch_size)])
        normalize(images)

    return in_memory, _best_ms(stream_batch, 5, torch.device("cpu"))


def cpu_name() -> str:
    """The CPU's model name as Linux reports it, else the platform's machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def print_policy_table(device: torch.device, batch_size: int = 128) -> None:
    """Part 5: each policy's cost per batch against the training step, as a Markdown table."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2048, 3, 32, 32), dtype=torch.uint8, generator=generator)
    data = LabelledImages(images, torch.randint(0, 10, (2048,), generator=generator))
    step = step_ms(device, batch_size, repeats=3 if device.type == "cpu" else 20)
    base_memory, base_stream = policy_costs(POLICIES["none"], data, device, batch_size)
    print(f"CPU: {cpu_name()}, torch threads "
          f"{torch.get_num_threads()}, device {device}, avx512_bf16 "
          f"{torch.cpu.get_capabilities().get('avx512_bf16')}")  # fmt: skip
    print(f"training step (ResNet-34 small, batch {batch_size}, 32 px): {step:.1f} ms")
    print(f"preset `cifar` alone: in-memory {base_memory:.2f} ms, worker path {base_stream:.1f} ms")
    print(
        "| policy | in-memory ms/batch (beyond preset) | worker path ms/batch | step ms | ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, settings in POLICIES.items():
        if name == "none":
            continue
        memory, stream = policy_costs(settings, data, device, batch_size)
        extra = memory - base_memory
        print(f"| {name} | {extra:.1f} | {stream:.1f} | {step:.0f} | {extra / step:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jpegs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5, help="passes; the fastest counts")
    parser.add_argument("--cifar-root", help="CIFAR-10 JPEG class folders (e.g. .../train)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for part 3")
    parser.add_argument("--decode-count", type=int, default=50_000, help="JPEGs for part 4")
    parser.add_argument("--skip", nargs="*", default=[], choices=["memory", "folder"])
    parser.add_argument("--policies", action="store_true", help="part 5 alone, as a table")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.policies:
        print_policy_table(torch.device(args.device), batch_size=128)
        return
    torch.set_num_threads(1)
    result: dict[str, float] = {"torch_threads": 1}
    if "memory" not in args.skip:
        result.update(bench_in_memory(args.batch_size, args.steps, args.rounds))
        print(json.dumps(result), flush=True)
    if "folder" not in args.skip:
        result.update(bench_folder(args.jpegs, args.repeats))
        print(json.dumps(result), flush=True)
    if args.cifar_root:
        result.update(bench_cifar_folder(args.cifar_root, args.batch_size, 10, args.workers))
        result.update(bench_decode_once(args.cifar_root, args.decode_count))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
