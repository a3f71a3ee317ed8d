"""What a hostile user tries against a training run: resuming with other settings, a class count
other than the dataset's, weights that turn NaN just before a save, a stop signal during
validation, a second process on the same run folder. Each gets one line, or a clean recovery, and
nothing is lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

import cnn_train.engine.loop as loop
import cnn_train.engine.trainer as trainer_module
from cnn_train.engine.stepper import Stepper
from cnn_train.engine.trainer import run_training
from cnn_train.errors import Interrupted, UserError
from tests.helpers import run_cli
from tests.helpers.cli_errors import one_error_line
from tests.helpers.runs import LONG_RUN, assert_same_state, finish, start_training


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["model=vgg16"], "model.name (resnet34 -> vgg16)"),
        (["data.num_classes=4"], "data.num_classes (10 -> 4)"),
        (["optimizer=adamw"], "optimizer.name (sgd -> adamw)"),
        (["data.native_size=16"], "data.native_size (8 -> 16)"),
    ],
)
def test_resume_refuses_a_checkpoint_of_other_settings(
    train_config, tmp_path: Path, overrides: list[str], names: str
) -> None:
    run_training(train_config(), tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(UserError, match=r"trained with other settings: .*") as raised:
        run_training(train_config("resume=auto", *overrides), tmp_path)
    assert names in str(raised.value) and "\n" not in str(raised.value)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_allows_a_longer_run_moved_data_and_other_workers(train_config, tmp_path) -> None:
    run_training(train_config(), tmp_path)
    run_training(train_config("resume=auto", "trainer.epochs=2", "data.num_workers=1"), tmp_path)
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("requested", [3, 12])
def test_a_class_count_other_than_the_datasets_is_refused_up_front(
    train_config, tmp_path: Path, requested: int
) -> None:
    with pytest.raises(UserError, match=f"model.num_classes={requested} but the dataset has 10"):
        run_training(train_config(f"model.num_classes={requested}"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_one_class_dataset_is_refused(train_config, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.num_classes must be in \[2, "):
        run_training(train_config("data.num_classes=1"), tmp_path)


def poison_at_call(call: int):
    """A Stepper.train_batch that makes the weights NaN just before the n-th batch."""
    original, calls = Stepper.train_batch, {"count": 0}

    def train_batch(stepper: Stepper, images, targets):
        calls["count"] += 1
        if calls["count"] == call:
            with torch.no_grad():
                for parameter in stepper.raw_model.parameters():
                    parameter.fill_(float("nan"))
        return original(stepper, images, targets)

    return train_batch


@pytest.mark.parametrize(
    ("where", "call", "overrides"),
    [
        ("a checkpoint_every_steps step", 2, ["trainer.checkpoint_every_steps=2"]),
        ("the last step of an epoch", 4, []),
        ("the last step of the run", 8, []),
    ],
)
def test_a_deferred_nonfinite_check_never_saves_nan_weights(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where, call, overrides
) -> None:
    """The GPU's one-step-late check, forced on the CPU: every save reads the last flag first."""
    monkeypatch.setattr(loop, "DEFERRED_DEVICE_TYPES", frozenset({"cpu"}))
    monkeypatch.setattr(Stepper, "train_batch", poison_at_call(call))
    cfg = train_config("trainer.epochs=2", *overrides)  # 64 images / 16 = 4 steps an epoch
    with pytest.raises(UserError, match=f"non-finite at step {call};"):
        run_training(cfg, tmp_path)
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        assert state["step"] < call, where
        assert all(
            torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()
        )


def test_a_stop_signal_during_validation_saves_and_the_resumed_run_is_bitwise_equal(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = tmp_path / "straight"
    run_training(train_config("trainer.epochs=2"), straight)
    real_evaluate = trainer_module.eval_pass
    calls = {"count": 0}

    def signal_in_last_validation(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2:  # the last epoch's validation: SIGTERM arrives mid-way
            os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "eval_pass", signal_in_last_validation)
    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted) as raised:
        run_training(train_config("trainer.epochs=2"), stopped)
    assert raised.value.exit_code == 143
    state = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["epoch_done"], state["batch_in_epoch"]) == (1, False, 4)
    monkeypatch.setattr(trainer_module, "eval_pass", real_evaluate)
    run_training(train_config("trainer.epochs=2", "resume=auto"), stopped)
    assert_same_state(straight, stopped)


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start_training(run_dir, base=[*LONG_RUN, "trainer.epochs=30"])
    lock = run_dir / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[1]
        time.sleep(0.05)
    try:
        second = run_cli("cnn-train", *LONG_RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        line = one_error_line(second)
        assert f"in use by process {first.pid}" in line
    finally:
        first.kill()
        first.wait()
    # The lock died with its holder (SIGKILL): the folder is usable again, and the killed save's
    # temporary file is cleared.
    stale = run_dir / "checkpoints" / ".last.pt.999999.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"x" * 1000)
    finish(run_dir, "resume=auto", "trainer.max_steps=2")
    assert not stale.exists()
