"""The everyday experiment tools: what is monitored, early stopping, which checkpoints are kept,
imbalanced data, a report per class, test-time augmentation, overfitting a few batches,
fractional batch limits, a profile of the run, and the LR range test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from cnn_train.data.order import pass_indices
from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.optim import build_schedule
from tests.helpers import QUICK, compose_config, read_metrics, run_cli, write_image
from tests.helpers.runs import assert_same_state

STOPS = ["trainer.monitor=val/loss", "trainer.early_stopping_patience=1", "scheduler=none"]


def eval_config(checkpoint: Path, *overrides: str):
    return compose_config("eval", [f"checkpoint={checkpoint}", "device=cpu", *overrides])


def test_early_stopping_ends_the_run_where_the_monitor_stalls(train_config, tmp_path: Path) -> None:
    summary = run_training(train_config("trainer.epochs=8", *STOPS), tmp_path)
    records = read_metrics(tmp_path)
    losses = [record["val_loss"] for record in records]
    stop = summary["stop_epoch"]
    assert summary["stopped_early"] and stop == records[-1]["epoch"] < 7
    assert losses[stop] >= min(losses[:stop])  # the last epoch did not improve
    assert summary["monitor"] == "val/loss" and summary["best_metric"] == min(losses)
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["best_epoch"] == summary["best_epoch"] == losses.index(min(losses))
    assert summary["best_val_acc1"] == records[summary["best_epoch"]]["val_acc1"]


def test_a_resumed_run_stops_early_exactly_where_an_uninterrupted_one_does(
    train_config, tmp_path: Path
) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = run_training(train_config("trainer.epochs=8", *STOPS), straight)
    run_training(train_config("trainer.epochs=8", "trainer.max_steps=4", *STOPS), resumed)
    second = run_training(train_config("trainer.epochs=8", "resume=auto", *STOPS), resumed)
    assert first["stop_epoch"] == second["stop_epoch"] and second["stopped_early"]
    assert_same_state(straight, resumed)
    again = run_training(train_config("trainer.epochs=8", "resume=auto", *STOPS), resumed)
    assert again["step"] == second["step"]  # a run that stopped early stays stopped


def test_top_k_and_every_n_epochs_keep_their_files(train_config, tmp_path: Path) -> None:
    overrides = ["trainer.epochs=4", "trainer.save_top_k=2", "trainer.save_every_epochs=2"]
    run_training(train_config(*overrides, "trainer.monitor=val/loss"), tmp_path)
    losses = [record["val_loss"] for record in read_metrics(tmp_path)]
    two_best = sorted(range(4), key=lambda epoch: losses[epoch])[:2]
    folder = tmp_path / "checkpoints"
    kept = {path.name for path in folder.glob("best-e*.pt")}
    assert kept == {f"best-e{epoch}.pt" for epoch in two_best}
    assert {path.name for path in folder.glob("epoch-*.pt")} == {"epoch-1.pt", "epoch-3.pt"}
    for epoch in two_best:
        assert torch.load(folder / f"best-e{epoch}.pt", weights_only=True)["epoch"] == epoch


def test_a_loss_monitor_turns_the_plateau_schedule_to_minimise() -> None:
    cfg = compose_config("train", ["scheduler=plateau"]).scheduler
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert build_schedule(cfg, optimizer, 10, 1.0, mode="min").scheduler.mode == "min"
    assert build_schedule(cfg, optimizer, 10, 1.0).scheduler.mode == "max"


def test_class_weights_must_fit_the_classes(train_config, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="lists 2 weights but the dataset has 10 classes"):
        run_training(train_config("trainer.class_weights=[1,2]"), tmp_path)
    run_training(train_config("trainer.class_weights=balanced", "data.sampler=balanced"), tmp_path)


def test_the_balanced_sampler_draws_every_class_alike_as_a_function_of_seed_and_epoch() -> None:
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    options = {"train": True, "batch_size": 10, "seed": 3, "balanced_by": labels}
    drawn = pass_indices(1000, epoch=1, **options)
    counts = torch.bincount(labels[drawn], minlength=3)
    assert counts.min() > 250  # about a third each, against 1% of class 2 in the data
    assert torch.equal(drawn, pass_indices(1000, epoch=1, **options))
    assert not torch.equal(drawn, pass_indices(1000, epoch=2, **options))
    ranks = [pass_indices(1000, epoch=1, rank=r, world_size=2, **options) for r in range(2)]
    assert torch.equal(torch.stack(ranks, 1).flatten(), drawn[: len(ranks[0]) * 2])


def test_eval_reports_each_class_and_writes_the_confusion_matrix(
    train_config, tmp_path: Path
) -> None:
    run_training(train_config("trainer.epochs=2"), tmp_path / "run")
    out = tmp_path / "eval"
    out.mkdir()
    record = eval_checkpoint(eval_config(tmp_path / "run" / "checkpoints" / "best.pt"), out)
    names = [f"class_{index}" for index in range(10)]
    assert list(record["per_class"]) == names
    assert sum(item["support"] for item in record["per_class"].values()) == record["samples"]
    with open(out / "confusion_matrix.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["", *names] and [row[0] for row in rows[1:]] == names
    counts = torch.tensor([[int(cell) for cell in row[1:]] for row in rows[1:]])
    assert counts.diag().sum() == round(record["acc1"] * record["samples"])
    occurring = (counts.sum(0) > 0) | (counts.sum(1) > 0)
    f1s = torch.tensor([item["f1"] for item in record["per_class"].values()])
    assert record["macro_f1"] == pytest.approx(float(f1s[occurring].mean()))
    assert read_metrics(tmp_path / "run")[-1]["val_macro_f1"] >= 0


def test_eval_with_ema_weights_reproduces_the_runs_ema_accuracy(train_config, tmp_path) -> None:
    overrides = ["trainer.epochs=2", "trainer.ema_decay=0.9", "trainer.monitor=val_ema/acc1"]
    run_training(train_config(*overrides), tmp_path / "run")
    last = read_metrics(tmp_path / "run")[-1]
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    for weights in ("ema", "auto"):
        record = eval_checkpoint(eval_config(checkpoint, f"weights={weights}"), tmp_path)
        assert record["acc1"] == last["val_ema_acc1"] and record["weights"] == weights
    assert (
        eval_checkpoint(eval_config(checkpoint, "weights=model"), tmp_path)["acc1"]
        == (last["val_acc1"])
    )


def test_test_time_augmentation_averages_views_and_is_recorded(
    train_config, tmp_path: Path
) -> None:
    run_training(train_config("trainer.epochs=1"), tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    plain = eval_checkpoint(eval_config(checkpoint), tmp_path)
    for tta in ("flip", "ten_crop"):
        record = eval_checkpoint(eval_config(checkpoint, f"tta={tta}"), tmp_path)
        assert record["tta"] == tta and record["samples"] == plain["samples"]
        assert json.loads((tmp_path / "eval.json").read_text())["tta"] == tta
        assert record["loss"] != plain["loss"]


def test_overfitting_a_batch_reaches_full_training_accuracy(tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        [
            "trainer.overfit_batches=1",
            "trainer.epochs=15",
            "scheduler=none",
            "optimizer=adam",
            "optimizer.lr=0.001",
            "data.mixup_alpha=0.5",  # overfitting turns it off, with label smoothing
            "device=cpu",
            "tracking.graph=false",
            "tracking.image_grid=false",
        ],
    )
    run_training(cfg, tmp_path)
    records = read_metrics(tmp_path)
    assert records[-1]["train_acc1"] == 1.0 and records[-1]["step"] == 15
    assert records[-1]["val_samples"] == 32  # validated on the same one batch


def test_a_fraction_limits_the_batches(train_config, tmp_path: Path) -> None:
    overrides = ["trainer.limit_train_batches=0.5", "trainer.limit_val_batches=0.5"]
    run_training(train_config(*overrides, "data.eval_batch_size=8"), tmp_path)
    record = read_metrics(tmp_path)[-1]
    assert record["step"] == 2 and record["val_samples"] == 16


def test_a_profile_of_the_run_leaves_its_results_unchanged(train_config, tmp_path: Path) -> None:
    run_training(train_config("trainer.epochs=1"), tmp_path / "plain")
    run_training(train_config("trainer.epochs=1", "trainer.profile_steps=[2,3]"), tmp_path / "p")
    trace = json.loads((tmp_path / "p" / "profile" / "trace.json").read_text())
    assert trace["traceEvents"]
    assert "Self CPU" in (tmp_path / "p" / "profile" / "top_ops.txt").read_text()
    assert_same_state(tmp_path / "plain", tmp_path / "p")


def test_the_lr_finder_suggests_an_lr_from_the_installed_cli(tmp_path: Path) -> None:
    done = run_cli(
        "cnn-lr-find",
        "steps=40",
        "hydra.run.dir=finder",
        "data=synthetic",
        "data.native_size=8",
        "device=cpu",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    key, _, value = done.stdout.strip().splitlines()[-1].partition("=")
    assert key == "optimizer.lr" and 1e-6 <= float(value) <= 1.0
    with open(tmp_path / "finder" / "lr_find.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert 3 <= len(rows) <= 40 and float(rows[0]["lr"]) == pytest.approx(1e-6)
    assert (tmp_path / "finder" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "finder" / "checkpoints").exists()


def test_the_console_scripts_stop_early_and_take_weights_and_views(tmp_path: Path) -> None:
    trained = run_cli(
        "cnn-train",
        *QUICK,
        "trainer.epochs=6",
        "trainer.ema_decay=0.9",
        "trainer.monitor=val_ema/loss",
        "trainer.early_stopping_patience=1",
        "trainer.save_top_k=2",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    if result["stopped_early"]:
        assert f"stopped early at epoch {result['stop_epoch'] + 1}" in trained.stdout
    assert result["monitor"] == "val_ema/loss" and result["status"] == "completed"
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    evaluated = run_cli(
        "cnn-eval", f"checkpoint={best}", "tta=flip", "device=cpu", "hydra.run.dir=ev", cwd=tmp_path
    )
    record = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert record["tta"] == "flip" and record["weights"] == "auto" and "per_class" in record
    assert (tmp_path / "ev" / "confusion_matrix.csv").is_file()
    write_image(tmp_path / "a.png", "RGB", 0)
    predicted = run_cli(
        "cnn-predict",
        f"checkpoint={best}",
        "images=[a.png]",
        "tta=ten_crop",
        "weights=ema",
        cwd=tmp_path,
    )
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.splitlines()[0].endswith("a.png")
    exported = run_cli(
        "cnn-export",
        f"checkpoint={best}",
        "format=torchscript",
        "weights=model",
        "output=model.ts",
        cwd=tmp_path,
    )
    assert exported.returncode == 0 and (tmp_path / "model.ts").is_file(), exported.stderr
