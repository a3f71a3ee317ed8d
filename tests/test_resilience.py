"""Runs that survive: exact resume after SIGKILL, signals, failed saves, NaN, untrusted files."""

from __future__ import annotations

import errno
import pickle
import re
import signal
from pathlib import Path

import pytest
import torch

import cnn_train.checkpoint as checkpoint_module
from cnn_train.config_checks import check_train_config
from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from tests.helpers import compose_config, run_cli
from tests.helpers.runs import (
    LONG_RUN,
    assert_same_state,
    finish,
    folder_run,
    start_training,
    wait_for_mid_epoch_checkpoint,
)


@pytest.mark.slow  # a stop signal with a bitwise-equal resume stays in tests/test_hostile_runs.py
@pytest.mark.parametrize(
    "case", ["resnet34 in memory, augmented", "alexnet (dropout)", "folder with 2 workers"]
)
def test_sigkill_mid_epoch_then_resume_is_bitwise_equal_to_a_straight_run(
    tmp_path: Path, case: str
) -> None:
    if case.startswith("folder"):
        base, overrides = folder_run(tmp_path / "images"), []
    else:
        base = LONG_RUN
        overrides = ["model=alexnet"] if case.startswith("alexnet") else ["data.augment=cifar"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish(straight, *overrides, base=base)
    process = start_training(killed, *overrides, base=base)
    wait_for_mid_epoch_checkpoint(process, killed)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    finish(killed, *overrides, "resume=auto", base=base)
    assert_same_state(straight, killed)
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


@pytest.mark.slow  # tests/test_hostile_runs.py stops a run by a signal in the default suite
@pytest.mark.parametrize(("number", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_resumable_checkpoint_and_exits_with_its_code(
    tmp_path: Path, number: int, code: int
) -> None:
    run_dir = tmp_path / "run"
    process = start_training(run_dir)
    wait_for_mid_epoch_checkpoint(process, run_dir)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    assert "resume=" in stderr and "Traceback" not in stderr
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert not state["epoch_done"]
    finish(run_dir, f"resume={run_dir}")
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 18


def test_two_fresh_runs_with_one_seed_are_bitwise_equal(train_config, tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        run_training(train_config("seed=7", "model=alexnet"), tmp_path / name)
    assert_same_state(tmp_path / "a", tmp_path / "b")


def test_a_save_that_crashes_halfway_leaves_the_previous_checkpoint(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save
    calls = {"count": 0}

    def crash_on_second_save(state, handle, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2:
            handle.write(b"half a checkpoint")
            raise RuntimeError("killed while writing")
        return real_save(state, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_on_second_save)
    with pytest.raises(UserError, match=r"killed while writing.*previous checkpoint is intact"):
        run_training(train_config("trainer.epochs=2"), tmp_path)
    folder = tmp_path / "checkpoints"
    assert sorted(path.name for path in folder.iterdir()) == ["best.pt", "last.pt"]
    assert torch.load(folder / "last.pt", weights_only=True)["epoch"] == 0


def test_a_failed_save_is_an_error_naming_the_cause(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    with pytest.raises(UserError, match=r"could not write checkpoint .*No space left on device"):
        run_training(train_config(), tmp_path)


def test_a_full_disk_reported_by_torch_is_one_line_and_keeps_the_last_checkpoint(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save
    calls = {"count": 0}

    def full_on_second_save(state, handle, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2:  # what torch's zip writer raises on ENOSPC
            raise RuntimeError(
                "[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed "
                "writing file data/3: file write failed"
            )
        return real_save(state, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", full_on_second_save)
    with pytest.raises(UserError, match="PytorchStreamWriter failed writing") as raised:
        run_training(train_config("trainer.epochs=2"), tmp_path)
    assert "\n" not in str(raised.value)
    last = tmp_path / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_a_non_finite_loss_stops_at_once_without_a_nan_checkpoint(train_config, tmp_path):
    with pytest.raises(UserError, match="non-finite at step") as raised:
        run_training(
            train_config(
                "optimizer.lr=1e30", "trainer.checkpoint_every_steps=1", "trainer.epochs=3"
            ),
            tmp_path,
        )
    step = int(re.search(r"at step (\d+)", str(raised.value)).group(1))
    assert step <= 3
    last = tmp_path / "checkpoints" / "last.pt"
    if last.exists():
        state = torch.load(last, weights_only=True)
        assert state["step"] < step
        assert all(
            torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()
        )


class PlantsAMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_pickle_never_runs(tmp_path: Path, train_config) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"model": PlantsAMarker(marker)}, handle)
    with pytest.raises(UserError, match="never unpickles"):
        eval_checkpoint(compose_config("eval", [f"checkpoint={evil}", "device=cpu"]), tmp_path)
    with pytest.raises(UserError, match="never unpickles"):
        run_training(train_config(f"model.weights={evil}"), tmp_path)
    with pytest.raises(UserError, match="never unpickles"):
        run_training(train_config(f"resume={evil}"), tmp_path)
    assert not marker.exists()


def test_a_target_in_the_config_is_refused(train_config) -> None:
    with pytest.raises(UserError, match=r"model\._target_ is not accepted"):
        check_train_config(train_config("+model._target_=os.system"))


def test_resume_auto_with_nothing_to_resume_starts_fresh(train_config, tmp_path: Path) -> None:
    run_dir = tmp_path / "outputs" / "day" / "run"
    run_dir.mkdir(parents=True)
    summary = run_training(train_config("resume=auto"), run_dir)
    assert summary["step"] == 4 and summary["run_dir"] == str(run_dir)


def test_resume_auto_never_takes_over_a_sibling_run_of_the_same_config(
    train_config, tmp_path: Path
) -> None:
    sibling, pinned = tmp_path / "outputs" / "day" / "sibling", tmp_path / "outputs" / "day" / "new"
    (sibling / ".hydra").mkdir(parents=True)
    cfg = train_config("resume=auto")
    (sibling / ".hydra" / "config.yaml").write_text(OmegaConfYaml.dump(cfg))
    run_training(cfg, sibling)
    before = (sibling / "checkpoints" / "last.pt").stat().st_mtime_ns
    pinned.mkdir()
    summary = run_training(train_config("resume=auto"), pinned)
    assert summary["run_dir"] == str(pinned) and summary["step"] == 4
    assert (pinned / "checkpoints" / "last.pt").is_file()
    assert (sibling / "checkpoints" / "last.pt").stat().st_mtime_ns == before
    assert len((sibling / "metrics.jsonl").read_text().splitlines()) == 1


def test_missing_resume_path_is_a_user_error(tmp_path: Path) -> None:
    result = run_cli("cnn-train", "resume=nowhere", "device=cpu", cwd=tmp_path)
    assert result.returncode == 1 and "resume=nowhere: no checkpoint there" in result.stderr


class OmegaConfYaml:
    @staticmethod
    def dump(cfg) -> str:
        from omegaconf import OmegaConf

        return OmegaConf.to_yaml(cfg)


@pytest.mark.parametrize("counter", ["SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"])
def test_a_job_its_launcher_started_again_resumes_without_being_told(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counter: str
) -> None:
    run_training(train_config(), tmp_path)
    monkeypatch.setenv(counter, "1")
    summary = run_training(
        train_config("trainer.epochs=2"), tmp_path
    )  # no resume= on the command line
    assert summary["step"] == 8
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
