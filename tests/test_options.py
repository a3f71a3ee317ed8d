"""Training options, precisions and speed switches, and what TensorBoard receives."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from cnn_train.engine.trainer import run_training
from tests.helpers import read_metrics


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)],
)
def test_each_precision_computes_in_its_dtype_on_the_cpu(
    train_config, tmp_path: Path, precision: str, dtype: torch.dtype
) -> None:
    computed: set[tuple[str, str, torch.dtype]] = set()

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            phase = "train" if module.training and torch.is_grad_enabled() else "eval"
            computed.add((phase, type(module).__name__, output.dtype))

    handle = register_module_forward_hook(record)
    try:
        overrides = (
            f"trainer.precision={precision}",
            "trainer.max_steps=2",
            "trainer.limit_val_batches=1",
        )
        run_training(train_config(*overrides), tmp_path)
    finally:
        handle.remove()
    assert computed == {
        (phase, layer, dtype) for phase in ("train", "eval") for layer in ("Conv2d", "Linear")
    }
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["trainer"]["precision"] == precision
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_accumulation_steps_the_optimizer_every_n_batches(train_config, tmp_path: Path) -> None:
    run_training(train_config("trainer.accumulate_steps=2", "trainer.epochs=2"), tmp_path)
    assert [record["step"] for record in read_metrics(tmp_path)] == [2, 4]


def test_ema_weights_are_evaluated_and_kept(train_config, tmp_path: Path) -> None:
    run_training(train_config("trainer.ema_decay=0.9"), tmp_path)
    record = read_metrics(tmp_path)[0]
    assert 0.0 <= record["val_ema_acc1"] <= 1.0
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["ema"].keys() == state["model"].keys()
    assert not torch.equal(state["ema"]["fc.weight"], state["model"]["fc.weight"])


@pytest.mark.parametrize(
    "overrides",
    [
        ("data.mixup_alpha=0.2",),
        ("data.cutmix_alpha=1.0", "data.mixup_alpha=0.2"),
        ("trainer.label_smoothing=0.1", "trainer.grad_clip_norm=1.0"),
        ("trainer.channels_last=true", "model=alexnet"),
    ],
)
def test_options_train_to_finite_weights(train_config, tmp_path: Path, overrides) -> None:
    summary = run_training(train_config(*overrides), tmp_path)
    assert summary["step"] == 4
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


@pytest.mark.slow
def test_compile_does_not_recompile_after_the_first_epoch(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch._dynamo.utils import counters

    # The eager backend keeps the test fast; recompilation is decided by dynamo's guards alone.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    graphs_after = []

    def run(epochs: int, folder: Path) -> None:
        folder.mkdir()
        run_training(
            train_config(
                "trainer.compile=true",
                f"trainer.epochs={epochs}",
                "tracking.graph=false",
                "data.val_samples=40",
            ),
            folder,
        )
        graphs_after.append(counters["stats"]["unique_graphs"])

    run(1, tmp_path / "one")
    torch._dynamo.reset()
    counters.clear()
    run(3, tmp_path / "three")
    assert graphs_after[1] == graphs_after[0]


def test_tensorboard_holds_the_documented_tags_by_step(train_config, tmp_path: Path) -> None:
    run_training(
        train_config(
            "trainer.epochs=2",
            "tracking.histogram_every=1",
            "trainer.log_every_steps=2",
            "tracking.graph=true",
        ),
        tmp_path,
    )
    (event_file,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    for tag in (
        "train/loss",
        "train/acc1",
        "val/loss",
        "val/acc1",
        "val/acc5",
        "train/lr",
        "vitals/images_per_sec",
        "train/batch_loss",
        "val_class_acc1/class_3",
    ):
        assert tag in tags["scalars"], tag
    assert [event.step for event in events.Scalars("val/acc1")] == [4, 8]
    assert [event.step for event in events.Scalars("train/batch_loss")] == [2, 4, 6, 8]
    assert {"train/images", "val/confusion_matrix"} <= set(tags["images"])
    assert "vitals/grad_norm" in tags["histograms"] and "weights/fc.weight" in tags["histograms"]
    assert tags["graph"]
