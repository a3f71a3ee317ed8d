"""A training run in-process: the run folder of the contract, checkpoints, eval and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.precision import cpu_has_native_bf16
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from tests.helpers import compose_config, read_metrics

METRIC_KEYS = {
    "epoch",
    "step",
    "train_loss",
    "train_acc1",
    "val_loss",
    "val_acc1",
    "val_acc5",
    "lr",
    "images_per_sec",
    "epoch_time_s",
}
CHECKPOINT_KEYS = {
    "model",
    "optimizer",
    "scheduler",
    "epoch",
    "step",
    "best_metric",
    "config",
    "class_names",
    "rng",
}


def eval_config(checkpoint: Path, *overrides: str):
    return compose_config("eval", [f"checkpoint={checkpoint}", "device=cpu", *overrides])


@pytest.fixture
def trained_run(train_config, tmp_path: Path) -> Path:
    """A two-epoch run on quick synthetic data."""
    run_training(train_config("trainer.epochs=2", "optimizer.lr=0.05"), tmp_path)
    return tmp_path


def test_a_run_writes_the_contract_folder(trained_run: Path) -> None:
    assert (trained_run / "run.json").is_file()
    assert list((trained_run / "tb").glob("events.out.tfevents.*"))
    records = read_metrics(trained_run)
    assert [r["epoch"] for r in records] == [0, 1]
    for record in records:
        assert record.keys() >= METRIC_KEYS
        assert 0.0 <= record["val_acc1"] <= 1.0 and 0.0 <= record["val_acc5"] <= 1.0
        assert record["val_acc5"] >= record["val_acc1"]
    assert records[1]["step"] == 2 * records[0]["step"] == 8
    info = json.loads((trained_run / "run.json").read_text())
    assert {"command", "versions", "git_commit", "host", "start"} <= info.keys()


def test_checkpoints_load_weights_only_with_the_contract_keys(trained_run: Path) -> None:
    for name in ("last.pt", "best.pt"):
        state = torch.load(trained_run / "checkpoints" / name, weights_only=True)
        assert state.keys() >= CHECKPOINT_KEYS
        assert not any(key.startswith("module.") for key in state["model"])
        assert isinstance(state["config"], dict)
        assert state["config"]["model"]["variant"] == "small"
        assert state["class_names"] == [f"class_{i}" for i in range(10)]
    best = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)
    assert best["best_metric"] == max(r["val_acc1"] for r in read_metrics(trained_run))


def test_eval_reproduces_the_runs_val_accuracy_exactly(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = trained_run / "checkpoints" / "last.pt"
    out = tmp_path / "eval"
    out.mkdir()
    record = eval_checkpoint(eval_config(checkpoint), out)
    last = read_metrics(trained_run)[-1]
    assert record["acc1"] == last["val_acc1"] and record["acc5"] == last["val_acc5"]
    assert record["loss"] == pytest.approx(last["val_loss"], rel=1e-12)
    assert record["samples"] == 32 and record["split"] == "val"
    assert json.loads((out / "eval.json").read_text()) == record


def test_eval_rejects_unknown_data_keys_and_splits(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = trained_run / "checkpoints" / "last.pt"
    with pytest.raises(UserError, match=r"data\.colour"):
        eval_checkpoint(eval_config(checkpoint, "+data.colour=1"), tmp_path)
    with pytest.raises(UserError, match="no 'test' split"):
        eval_checkpoint(eval_config(checkpoint, "data.split=test"), tmp_path)


def test_max_steps_and_batch_limits_cut_the_run(train_config, tmp_path: Path) -> None:
    run_training(
        train_config("trainer.epochs=5", "trainer.max_steps=3", "trainer.limit_val_batches=1"),
        tmp_path,
    )
    records = read_metrics(tmp_path)
    assert len(records) == 1 and records[0]["step"] == 3 and records[0]["val_samples"] == 16


def test_resume_from_an_epoch_end_continues_in_the_same_folder(train_config, tmp_path) -> None:
    straight, first, elsewhere = (tmp_path / name for name in ("straight", "first", "elsewhere"))
    for folder in (straight, first, elsewhere):
        folder.mkdir()
    common = ("scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5")
    run_training(train_config("trainer.epochs=2", *common), straight)
    run_training(train_config("trainer.epochs=1", *common), first)
    run_training(train_config("trainer.epochs=2", f"resume={first}", *common), elsewhere)
    assert not (elsewhere / "metrics.jsonl").exists()
    assert [r["epoch"] for r in read_metrics(first)] == [0, 1]
    expected = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    resumed = torch.load(first / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["step"] == expected["step"] == 8
    for key, tensor in expected["model"].items():
        torch.testing.assert_close(resumed["model"][key], tensor, rtol=0, atol=0)


def test_the_model_learns_synthetic_data(train_config, tmp_path: Path) -> None:
    summary = run_training(
        train_config(
            "trainer.epochs=3",
            "optimizer=adamw",
            "optimizer.lr=1e-3",
            "data.noise=0.3",
            "data.train_samples=256",
            "scheduler=cosine",
        ),
        tmp_path,
    )
    assert summary["best_val_acc1"] >= 0.9


def test_a_batch_larger_than_the_training_split_is_a_user_error(train_config, tmp_path) -> None:
    with pytest.raises(UserError, match=r"smaller data\.batch_size"):
        run_training(train_config("data.batch_size=100"), tmp_path)


def test_weights_from_another_run_must_fit_the_model(trained_run: Path, train_config, tmp_path):
    checkpoint = trained_run / "checkpoints" / "last.pt"
    with pytest.raises(UserError, match="does not fit this model"):
        run_training(train_config(f"model.weights={checkpoint}", "model=vgg16"), tmp_path)
    out = tmp_path / "ok"
    out.mkdir()
    run_training(train_config(f"model.weights={checkpoint}", "trainer.max_steps=1"), out)


def test_the_saved_config_is_plain_and_resolved(trained_run: Path) -> None:
    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    config = OmegaConf.create(state["config"])
    assert config.data.image_size == 8 and config.model.num_classes == 10
    assert config.trainer.precision == ("bf16" if cpu_has_native_bf16() else "fp32")  # auto
