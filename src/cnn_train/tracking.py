"""What a run reports: tqdm bars, TensorBoard scalars, metrics.jsonl and run.json."""

from __future__ import annotations

import json
import logging
import platform
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from tqdm import tqdm

from cnn_train.files import append_line, write_text_atomically

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

T = TypeVar("T")
MAX_CLASS_SCALARS = 100
log = logging.getLogger(__name__)
HPARAM_KEYS = (
    "model.name",
    "data.name",
    "data.batch_size",
    "optimizer.name",
    "optimizer.lr",
    "optimizer.weight_decay",
    "scheduler.name",
    "trainer.epochs",
)
PACKAGES = ("cnn-train", "torch", "torchvision", "hydra-core", "omegaconf", "tensorboard")
# TensorBoard tag -> metrics.jsonl key, once per epoch. Housekeeping goes under `vitals/`, which
# sorts after `train/` and `val/`: the Time Series page opens the first two groups it lists.
EPOCH_TAGS = {
    "train/loss": "train_loss",
    "train/acc1": "train_acc1",
    "val/loss": "val_loss",
    "val/acc1": "val_acc1",
    "val/acc5": "val_acc5",
    "val_ema/loss": "val_ema_loss",
    "val_ema/acc1": "val_ema_acc1",
    "val_ema/acc5": "val_ema_acc5",
    "vitals/images_per_sec": "images_per_sec",
    "vitals/epoch_time_s": "epoch_time_s",
    "vitals/skipped_files": "skipped_files",
}
STEP_TAGS = {"lr": "train/lr"}
# The Custom Scalars dashboard: tag regexes (matched from the start of each run's tags), so a
# sweep's runs each add their own series, and every run writes the same layout (merged as one).
LAYOUT = {
    "training curves": {
        "loss": ["Multiline", ["train/loss$", "val/loss$", "val_ema/loss$"]],
        "top-1 accuracy": ["Multiline", ["train/acc1$", "val/acc1$", "val_ema/acc1$"]],
        "top-5 accuracy": ["Multiline", ["val/acc5$", "val_ema/acc5$"]],
        "learning rate": ["Multiline", ["train/lr$"]],
    }
}


def progress_bar(iterable: Iterable[T], *, total: int, desc: str) -> tqdm:
    """A tqdm bar on stderr that stays quiet when stderr is not a terminal."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        disable=None,
    )


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_run_info(run_dir: Path) -> None:
    """Record how the run was started: command line, versions, git commit, host, start time."""
    info = {
        "command": sys.argv,
        "cwd": str(Path.cwd()),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in PACKAGES},
        "git_commit": _git_commit(),
        "host": socket.gethostname(),
        "start": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomically(run_dir / "run.json", json.dumps(info, indent=2) + "\n")


class RunTracker:
    """Writes TensorBoard events under `<run_dir>/tb` and one JSON line per epoch."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.metrics_path = run_dir / "metrics.jsonl"
        self.writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)
        if purge_step is None:  # a resumed run has its layout in its first event file
            self.writer.add_custom_scalars(LAYOUT)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Add TensorBoard scalars at a global step; `lr` (the step's LR) goes to `train/lr`."""
        for key, value in values.items():
            self.writer.add_scalar(STEP_TAGS.get(key, key), value, step)

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Append an epoch's record to metrics.jsonl and its scalars to TensorBoard.

        The record's `lr` stays out of TensorBoard: `train/lr` has the LR of every logged step.
        """
        append_line(self.metrics_path, json.dumps(record))  # a failed append is one line
        present = {tag: record[key] for tag, key in EPOCH_TAGS.items() if key in record}
        self.scalars(present, record["step"])
        self.writer.flush()

    def log_start(
        self,
        model: nn.Module,
        images: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        image_grid: bool,
        graph: bool,
    ) -> None:
        """Once at the start: a grid of training images and the model graph.

        `images` is the loader's first training batch, so the grid shows what the model trains
        on: the preset, `data.auto_augment` and `data.random_erase` (an erased box shows the
        mean colour) applied, with the normalization undone.
        """
        from torchvision.utils import make_grid

        if image_grid:
            sample = images[:64].detach().float().cpu()
            sample = sample * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(
                1, -1, 1, 1
            )
            self.writer.add_image("train/images", make_grid(sample.clamp(0, 1), nrow=8), 0)
        if graph:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # add_graph traces with torch.jit
                    self.writer.add_graph(model, images[:1])
            except Exception as error:  # tracing can fail for exotic models; the run goes on
                log.warning(f"TensorBoard graph skipped: {error}")

    def log_validation_details(
        self, confusion: torch.Tensor | None, class_names: list[str], step: int
    ) -> None:
        """The confusion matrix as an image and each class's accuracy (as scalars up to 100)."""
        if confusion is None:
            return
        self.writer.add_image("val/confusion_matrix", confusion_image(confusion), step)
        per_class = confusion.diag().double() / confusion.sum(dim=1).double().clamp(min=1)
        self.writer.add_histogram("val/class_acc1", per_class, step)
        if len(class_names) <= MAX_CLASS_SCALARS:
            for name, accuracy in zip(class_names, per_class.tolist(), strict=True):
                self.writer.add_scalar(f"val_class_acc1/{name}", accuracy, step)
        self.writer.flush()

    def log_histograms(self, model: nn.Module, grad_norms: torch.Tensor | None, step: int) -> None:
        """Histograms of every parameter, and of the per-tensor gradient norms of the last step."""
        for name, parameter in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), step)
        if grad_norms is not None:
            self.writer.add_histogram("vitals/grad_norm", grad_norms.cpu(), step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def confusion_image(confusion: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """The row-normalized confusion matrix as a [3, H, W] image: white 0, dark blue 1."""
    rows = confusion.double().sum(dim=1, keepdim=True).clamp_(min=1)
    share = (confusion.double() / rows).float()
    share = share.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    white_to_blue = torch.tensor([0.9, 0.8, 0.2]).view(3, 1, 1)
    return (1.0 - share.unsqueeze(0) * white_to_blue).clamp_(0, 1)


def _hparam_value(text: str) -> float | int | bool | str:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def run_hparams(run_dir: Path, config: dict[str, Any]) -> dict[str, float | int | bool | str]:
    """The run's main settings and its command-line overrides (from `.hydra/overrides.yaml`)."""
    values: dict[str, float | int | bool | str] = {}
    for key in HPARAM_KEYS:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float, bool, str)):
            values[key] = node
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        import yaml

        for item in yaml.safe_load(overrides.read_text()) or []:
            key, _, value = str(item).lstrip("+~").partition("=")
            values[key] = _hparam_value(value)
    return values


def write_hparams(
    writer: SummaryWriter, run_dir: Path, config: dict[str, Any], best: dict[str, Any], step: int
) -> None:
    """Write the run's hparams, and its best val top-1 as `val/best_acc1`, into its event file.

    `SummaryWriter.add_hparams` would open a second event file in a subfolder (a second run in
    TensorBoard); writing the three hparams summaries through the run's file writer keeps one.
    """
    from torch.utils.tensorboard.summary import hparams

    writer.add_scalar("val/best_acc1", float(best["val_acc1"]), step)
    metric_tags = ["val/best_acc1"]
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.is_file() and metrics_path.read_text().strip():
        metric_tags += ["val/acc1", "val/loss"]
    # Only the tags are written: the HParams tab shows each tag's last value in the run.
    for summary in hparams(run_hparams(run_dir, config), dict.fromkeys(metric_tags, 0.0)):
        writer.file_writer.add_summary(summary)
    writer.flush()
