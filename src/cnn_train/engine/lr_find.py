"""The LR range test (`cnn-lr-find`, Smith 2015): raise the LR exponentially over a few hundred
steps, watch the smoothed loss, suggest the LR where it falls fastest. Nothing it trains is kept."""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cnn_train.config_checks import check_lr_find_config
from cnn_train.distributed import device_option, resolve_context
from cnn_train.engine.setup import build_parts
from cnn_train.engine.state import RunParts
from cnn_train.errors import UserError
from cnn_train.files import write_bytes_atomically, write_text_atomically
from cnn_train.schema import TrainConfig

log = logging.getLogger(__name__)
SMOOTHING = 0.98  # the loss's exponential moving average, debiased (as fastai's finder)
DIVERGENCE = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum
SKIP_START = 10  # the first points are too noisy to suggest from


def find_lr(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the range test in this process; write lr_find.csv, lr_find.png and TensorBoard."""
    check_lr_find_config(cfg)  # bounds of every key, and an LR range that rises
    if cfg.scheduler.name != "none" or device_option(cfg.device).data_parallel:
        raise UserError(
            "cnn-lr-find sets the LR itself, in one process: drop scheduler=... and use a "
            "one-process device (device=auto, cpu, cuda or mps)"
        )
    train_cfg = OmegaConf.masked_copy(cfg, [field for field in TrainConfig.__dataclass_fields__])
    parts = build_parts(train_cfg, run_dir, resolve_context(cfg.device))
    rows = range_test(parts, cfg.start_lr, cfg.end_lr, cfg.steps)
    suggested = suggest(rows)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(run_dir / "lr_find.csv", rows_csv(rows))
    write_bytes_atomically(run_dir / "lr_find.png", plot(rows, suggested))
    write_tensorboard(run_dir, rows)
    log.info(f"LR range test: {len(rows)} steps, suggested LR {suggested:.3g} (steepest descent)")
    return {"suggested_lr": suggested, "steps": len(rows), "run_dir": str(run_dir)}


def batches_forever(parts: RunParts) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches, epoch after epoch, as the run would read them."""
    for epoch in itertools.count():
        parts.train_loader.set_epoch(epoch)
        yield from itertools.islice(parts.train_loader, parts.steps_per_epoch)


def range_test(parts: RunParts, start: float, end: float, steps: int) -> list[list[float]]:
    """[lr, loss, smoothed loss] per optimizer step, LR from `start` to `end` geometrically;
    stops early once the smoothed loss diverges."""
    rows: list[list[float]] = []
    average, best = 0.0, math.inf
    lrs = np.geomspace(start, end, steps)
    parts.train_model.train()
    batches = batches_forever(parts)
    for lr in lrs:
        for group in parts.optimizer.param_groups:
            group["lr"] = float(lr)
        stepped = False
        while not stepped:  # one optimizer step (trainer.accumulate_steps batches)
            images, targets = next(batches)
            _, loss, stepped = parts.stepper.train_batch(images, targets)
        value = loss.item()
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (len(rows) + 1))
        rows.append([float(lr), value, smoothed])
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > DIVERGENCE * best:
            break
    return rows


def suggest(rows: list[list[float]]) -> float:
    """The LR where the smoothed loss falls fastest against log LR (its most negative slope)."""
    usable = [row for row in rows if math.isfinite(row[2])]
    if len(usable) < 3:
        raise UserError(
            f"the loss diverged after {len(rows)} steps; lower start_lr (now {rows[0][0]:g})"
        )
    skip = SKIP_START if len(usable) > 2 * SKIP_START else 0
    lrs = np.log10([row[0] for row in usable])
    slopes = np.gradient(np.array([row[2] for row in usable]), lrs)
    return float(usable[skip + int(np.argmin(slopes[skip:]))][0])


def rows_csv(rows: list[list[float]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["lr", "loss", "smoothed_loss"])
    writer.writerows(rows)
    return out.getvalue()


def plot(rows: list[list[float]], suggested: float) -> bytes:
    """The smoothed loss against the LR on a log axis, the suggestion marked, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    axes.plot([row[0] for row in rows], [row[1] for row in rows], alpha=0.3, label="loss")
    axes.plot([row[0] for row in rows], [row[2] for row in rows], label="smoothed loss")
    axes.axvline(suggested, color="red", linestyle="--", label=f"suggested {suggested:.3g}")
    smoothed = [row[2] for row in rows if math.isfinite(row[2])]
    low = min(smoothed)  # the raw loss spikes as it diverges: frame the smoothed descent
    axes.set_ylim(low - 0.1 * abs(low), max(smoothed[0], low) * 1.5 + 1e-6)
    axes.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="LR range test")
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def write_tensorboard(run_dir: Path, rows: list[list[float]]) -> None:
    """The curve as TensorBoard scalars by step: lr_find/loss, smoothed_loss and lr."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run_dir / "tb")) as writer:
        for step, (lr, loss, smoothed) in enumerate(rows, 1):
            writer.add_scalar("lr_find/lr", lr, step)
            writer.add_scalar("lr_find/loss", loss, step)
            writer.add_scalar("lr_find/smoothed_loss", smoothed, step)
