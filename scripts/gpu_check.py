"""Check and time cnn-train's models on a GPU machine; print one table.

    PYTHONPATH=src python scripts/gpu_check.py             # on a GPU machine: under 8 minutes
    PYTHONPATH=src python scripts/gpu_check.py --dry-run   # the same code paths on CPU, tiny sizes

It times training images/s of alexnet, vgg16 and resnet34 at 224 px on synthetic tensors in fp32,
bf16 autocast, bf16 + channels_last and bf16 + channels_last + torch.compile; checks AlexNet's
two-tower split on [cuda:0, cpu] (a missing transfer fails there) and on [cuda:0, cuda:1] against
the grouped model and times it; and runs a 2-process DDP (nccl) training of resnet34 when two
GPUs are visible. Every timed step is cnn-train's own (engine.stepper.Stepper), so the table is
what a run gets. Without CUDA it runs as --dry-run. It needs torch and cnn_train, not Hydra or
OmegaConf. Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gpu_timing import (  # scripts/ is on sys.path when this script runs
    DRY,
    GPU,
    MODELS,
    MODES,
    SPLIT_TOLERANCE,
    Row,
    Sizes,
    progress,
    synchronize,
    time_steps,
    train_step_fn,
)
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cnn_train.distributed import free_port
from cnn_train.models import build_model
from cnn_train.models.split import group_state_dict, split_alexnet
from cnn_train.table import text_table


def check_training(name: str, mode: str, device: torch.device, sizes: Sizes) -> Row:
    """Time training steps of one model in one precision/layout/compile mode."""
    precision, channels_last, compiled = MODES[mode]
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    raw = build_model(name, sizes.classes, sizes.variant[name]).to(device)
    raw = raw.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(raw.parameters(), lr=1e-3, momentum=0.9)
    model = raw
    if compiled:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model = torch.compile(raw, backend=sizes.compile_backend)
    side = sizes.image[name]
    images = torch.randn(sizes.batch, 3, side, side, device=device)
    targets = torch.randint(0, sizes.classes, (sizes.batch,), device=device)
    step = train_step_fn(
        model, optimizer, precision, device.type, raw_model=raw, channels_last=channels_last
    )
    rate, first = time_steps(step, images, targets, sizes, lambda: synchronize(device))
    row = Row("train", name, f"{mode} b{sizes.batch} {side}px", rate, extra={"first_s": first})
    if compiled:
        # More graphs than the first step made would mean recompiles inside the timed window.
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        row.result = f"ok: {graphs} graph(s) compiled"
    return row


def max_relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    scale = reference.abs().max().clamp_min(1e-12)
    return ((ours.to(reference.device) - reference).abs().max() / scale).item()


@contextmanager
def exact_float32() -> Iterator[None]:
    """No TF32 while comparing, so both forms compute in true fp32."""
    saved = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])


def check_split(devices: Sequence[torch.device], sizes: Sizes) -> list[Row]:
    """The split AlexNet against the grouped one on devices[0]: outputs, gradients, images/s."""
    torch.manual_seed(0)
    side, batch = sizes.image["alexnet2012"], sizes.split_batch
    grouped = build_model("alexnet2012", sizes.classes, "imagenet", dropout=0.0).to(devices[0])
    split = split_alexnet(grouped, devices)
    images = torch.randn(batch, 3, side, side, device=split.input_device)
    targets = torch.randint(0, sizes.classes, (batch,), device=split.input_device)
    with exact_float32():
        reference = grouped(images)
        ours = split(images)
        nn.functional.cross_entropy(reference, targets).backward()
        nn.functional.cross_entropy(ours, targets.to(split.output_device)).backward()
    output_diff = max_relative_difference(ours, reference)
    gradients = group_state_dict({name: p.grad for name, p in split.named_parameters()})
    grad_diff = max(
        max_relative_difference(gradients[name], p.grad) for name, p in grouped.named_parameters()
    )
    ok = output_diff < SPLIT_TOLERANCE and grad_diff < SPLIT_TOLERANCE
    verdict = "ok" if ok else "FAIL"
    result = f"{verdict}: max rel diff output {output_diff:.1e}, gradients {grad_diff:.1e}"
    names = ", ".join(str(device) for device in devices)

    def sync() -> None:
        for device in devices:
            synchronize(device)

    rows = []
    for label, model in ((f"grouped on {devices[0]}", grouped), (f"split [{names}]", split)):
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        step = train_step_fn(model, optimizer, "fp32", devices[0].type)
        rate, first = time_steps(step, images, targets, sizes, sync)
        row = Row("split", "alexnet2012", f"{label} fp32 b{batch} {side}px", rate)
        row.result = result if model is split else "reference"
        row.extra = {"first_s": first}
        rows.append(row)
    return rows


def ddp_worker(
    rank: int, world: int, port: int, backend: str, sizes: Sizes, result_path: str
) -> None:
    """One DDP rank training resnet34; rank 0 writes images/s and the ranks' weight spread."""
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        cuda = backend == "nccl"
        device = torch.device("cuda", rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        torch.manual_seed(rank)
        raw = build_model("resnet34", sizes.classes, sizes.variant["resnet34"]).to(device)
        raw = raw.to(memory_format=torch.channels_last)
        model = DistributedDataParallel(raw, device_ids=[rank] if cuda else None)
        optimizer = torch.optim.SGD(raw.parameters(), lr=1e-3, momentum=0.9)
        side = sizes.image["resnet34"]
        images = torch.randn(sizes.batch, 3, side, side, device=device)
        targets = torch.randint(0, sizes.classes, (sizes.batch,), device=device)
        precision = "bf16" if cuda else "fp32"
        step = train_step_fn(
            model, optimizer, precision, device.type, raw_model=raw, channels_last=True
        )
        rate, _ = time_steps(step, images, targets, sizes, lambda: synchronize(device))
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
        sums = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(sums, checksum)
        rates = [torch.zeros(1, device=device) for _ in range(world)]
        dist.all_gather(rates, torch.tensor([rate], device=device))
        if rank == 0:
            spread = (max(sums) - min(sums)).abs().item() / max(sums).abs().clamp_min(1e-12).item()
            total = sum(r.item() for r in rates)
            Path(result_path).write_text(json.dumps({"images_per_sec": total, "spread": spread}))
    finally:
        dist.destroy_process_group()


def check_ddp(backend: str, sizes: Sizes) -> Row:
    """Spawn a 2-process DDP job and read what rank 0 reported."""
    with tempfile.TemporaryDirectory() as folder:
        result_path = str(Path(folder) / "ddp.json")
        mp.spawn(ddp_worker, args=(2, free_port(), backend, sizes, result_path), nprocs=2)
        report = json.loads(Path(result_path).read_text())
    side = sizes.image["resnet34"]
    setting = f"{backend} 2 procs bf16+cl b{sizes.batch}/proc {side}px"
    if backend != "nccl":
        setting = f"{backend} 2 procs fp32 b{sizes.batch}/proc {side}px"
    ok = report["spread"] < 1e-6
    result = f"{'ok' if ok else 'FAIL'}: weights agree across ranks (rel {report['spread']:.1e})"
    return Row("ddp", "resnet34", setting, report["images_per_sec"], result)


def guarded(check: str, model: str, setting: str, run: Callable[[], list[Row]]) -> list[Row]:
    """Run one check; a failure becomes a FAIL row instead of ending the script."""
    progress(f"{check} {model} {setting} ...")
    try:
        return run()
    except Exception as error:  # one broken check must not hide the others' results
        traceback.print_exc(file=sys.stderr)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return [Row(check, model, setting, None, f"FAIL: {type(error).__name__}: {message}"[:90])]
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def import_row() -> Row:
    """Which config libraries got imported: none, so the script runs where Hydra is absent."""
    loaded = sorted({m.split(".")[0] for m in sys.modules} & {"hydra", "omegaconf"})
    result = f"FAIL: imported {', '.join(loaded)}" if loaded else "ok: no hydra/omegaconf"
    return Row("imports", "-", "torch + cnn_train.models", None, result)


def format_table(rows: list[Row], header: str) -> str:
    columns = ("check", "model", "setting", "images/s", "first step s", "result")
    cells = [
        (
            row.check,
            row.model,
            row.setting,
            "-" if row.images_per_sec is None else f"{row.images_per_sec:,.1f}",
            f"{row.extra['first_s']:.2f}" if "first_s" in row.extra else "-",
            row.result,
        )
        for row in rows
    ]
    first, *rest = text_table([columns, *cells], separator=" | ")
    widths = [max(len(c[i]) for c in [columns, *cells]) for i in range(len(columns))]
    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([header, first, rule, *rest])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU, 1-2 steps")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--budget-s", type=float, default=400.0, help="start no timing run after this many seconds"
    )
    args = parser.parse_args(argv)
    gpus = torch.cuda.device_count()
    dry = args.dry_run or gpus == 0
    if gpus == 0 and not args.dry_run:
        progress("no CUDA GPU is visible: running the dry run on CPU")
    sizes = DRY if dry else GPU
    device = torch.device("cpu") if dry else torch.device("cuda", 0)
    torch.backends.cudnn.benchmark = not dry
    started = time.perf_counter()

    rows: list[Row] = [import_row()]
    pairs = [["cpu", "cpu"]] if dry else [["cuda:0", "cpu"]]
    if gpus >= 2 and not dry:
        pairs.append(["cuda:0", "cuda:1"])
    for pair in pairs:
        devices = [torch.device(d) for d in pair]
        rows += guarded("split", "alexnet2012", str(pair), lambda d=devices: check_split(d, sizes))
    if not dry and gpus < 2:
        rows.append(Row("split", "alexnet2012", "[cuda:0, cuda:1]", None, "skipped: 1 GPU"))

    if gpus >= 2 and not dry:
        rows += guarded("ddp", "resnet34", "nccl", lambda: [check_ddp("nccl", sizes)])
    elif dry:
        rows += guarded("ddp", "resnet34", "gloo", lambda: [check_ddp("gloo", sizes)])
    else:
        rows.append(Row("ddp", "resnet34", "nccl 2 procs", None, "skipped: 1 GPU"))

    for name in args.models:
        for mode in MODES:
            if time.perf_counter() - started > args.budget_s:
                rows.append(Row("train", name, mode, None, f"skipped: past {args.budget_s:.0f} s"))
                continue
            rows += guarded(
                "train", name, mode, lambda n=name, m=mode: [check_training(n, m, device, sizes)]
            )

    where = "CPU (dry run)" if dry else f"{gpus} x {torch.cuda.get_device_name(0)}"
    header = (
        f"gpu_check on {where}, torch {torch.__version__}, "
        f"{time.perf_counter() - started:.0f} s; images/s of training steps on synthetic data"
    )
    print(format_table(rows, header), flush=True)
    return 1 if any(row.failed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
