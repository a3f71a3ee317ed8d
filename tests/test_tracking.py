"""What a run leaves in TensorBoard: a true LR series, tags that sort loss and accuracy first, and
a Custom Scalars layout whose charts find the run's series."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata

from cnn_train.engine.trainer import run_training
from cnn_train.tracking import RunTracker
from tests.helpers import read_metrics, run_cli
from tests.helpers.runs import assert_same_state

# The default job, cut short: 2 epochs of 4 steps, one validation batch, the LR at every step.
SHORT = [
    "trainer.epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.log_every_steps=1",
    "tracking.graph=false",
]


def events_of(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    return events


def onecycle_lrs(config: dict, total_steps: int) -> list[float]:
    """The LR of each optimizer step under the run's one-cycle schedule, by torch's OneCycleLR."""
    lr, schedule = config["optimizer"]["lr"], config["scheduler"]
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=lr, momentum=0.9)
    onecycle = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=total_steps,
        pct_start=schedule["pct_start"],
        div_factor=schedule["div_factor"],
        final_div_factor=schedule["final_div_factor"],
    )
    used = []
    for _ in range(total_steps):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        onecycle.step()
    return used


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("short")
    result = run_cli("cnn-train", *SHORT, "hydra.run.dir=run", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "run"


def test_the_lr_series_holds_the_lr_each_step_used(short_run: Path) -> None:
    config = torch.load(short_run / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert config["scheduler"]["name"] == "onecycle"
    trainer = config["trainer"]
    total = trainer["epochs"] * trainer["limit_train_batches"]
    expected = onecycle_lrs(config, total)
    points = events_of(short_run).Scalars("train/lr")
    # One point per step (no second value at any step), each the LR that step used.
    assert [point.step for point in points] == list(range(1, total + 1))
    assert [point.value for point in points] == pytest.approx(expected, rel=1e-6)
    # metrics.jsonl keeps each epoch's LR at its start.
    starts = [record["lr"] for record in read_metrics(short_run)]
    assert starts == pytest.approx(expected[:: trainer["limit_train_batches"]], rel=1e-6)


def test_loss_and_accuracy_come_first_and_housekeeping_after(short_run: Path) -> None:
    tags = events_of(short_run).Tags()
    names = [tag for kind in ("scalars", "images", "histograms") for tag in tags[kind]]
    groups = sorted({name.split("/")[0] for name in names})
    # TensorBoard's Time Series page lists tag groups in this order and opens the first two.
    assert groups[:2] == ["train", "val"], groups
    for tag in ("train/loss", "val/loss", "train/acc1", "val/acc1", "val/acc5", "train/lr"):
        assert tag in tags["scalars"], tag
    for tag in ("vitals/images_per_sec", "vitals/epoch_time_s", "vitals/skipped_files"):
        assert tag in tags["scalars"], tag
    assert "lr" not in tags["scalars"]


def test_the_layout_charts_find_the_epoch_series(tmp_path: Path) -> None:
    tracker = RunTracker(tmp_path)
    record = {
        "step": 10,
        "train_loss": 1.0,
        "train_acc1": 0.5,
        "val_loss": 1.2,
        "val_acc1": 0.4,
        "val_acc5": 0.9,
        "val_ema_acc1": 0.45,
        "lr": 0.1,
        "images_per_sec": 100.0,
        "epoch_time_s": 2.0,
        "skipped_files": 0,
    }
    tracker.log_epoch(record)
    tracker.scalars({"train/batch_loss": 1.1, "lr": 0.05}, 10)
    tracker.close()
    events = events_of(tmp_path)
    (event,) = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    scalars = events.Tags()["scalars"]
    # The custom scalars plugin matches each regex from the start of every tag of every run.
    charts = {
        chart.title: sorted(tag for tag in scalars for r in chart.multiline.tag if re.match(r, tag))
        for category in layout.category
        for chart in category.chart
    }
    assert charts == {
        "loss": ["train/loss", "val/loss"],
        "top-1 accuracy": ["train/acc1", "val/acc1", "val_ema/acc1"],
        "top-5 accuracy": ["val/acc5"],
        "learning rate": ["train/lr"],
    }
    assert [point.value for point in events.Scalars("train/lr")] == [pytest.approx(0.05)]


@pytest.mark.slow
def test_logging_the_graph_leaves_training_unchanged(train_config, tmp_path: Path) -> None:
    """The trace runs in eval mode: BatchNorm statistics and dropout masks are not touched."""
    for graph in ("true", "false"):
        (tmp_path / graph).mkdir()
        run_training(train_config(f"tracking.graph={graph}", "seed=3"), tmp_path / graph)
    assert EventAccumulator(str(tmp_path / "true" / "tb")).Reload().Graph() is not None
    assert_same_state(tmp_path / "true", tmp_path / "false")
