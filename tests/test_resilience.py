"""Runs that survive: exact resume after SIGKILL, signals, failed saves, NaN, untrusted files."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import cnn_train.checkpoint as checkpoint_module
from cnn_train.engine.evaluator import run_eval
from cnn_train.engine.trainer import fit
from cnn_train.errors import UserError
from cnn_train.schema import validate_train
from tests.conftest import compose_config, console_script, run_cli
from tests.test_data import write_tree

LONG_RUN = [
    "data=synthetic",
    "data.native_size=8",
    "data.train_samples=96",
    "data.val_samples=32",
    "data.batch_size=16",
    "trainer.epochs=3",
    "trainer.checkpoint_every_steps=2",
    "device=cpu",
]


def folder_run(root: Path) -> list[str]:
    """A run over a JPEG class-folder tree read by 2 DataLoader workers with random augmentation."""
    if not root.exists():
        write_tree(root, classes=("a", "b", "c", "d"), per_class=16)
    return [
        "data=cifar10_folder",
        f"data.root={root}",
        "data.num_workers=2",
        "data.val_fraction=0.25",
        "data.batch_size=8",
        "trainer.epochs=3",
        "trainer.checkpoint_every_steps=2",
        "device=cpu",
    ]


def start_training(
    run_dir: Path, *overrides: str, base: list[str] = LONG_RUN
) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [console_script("cnn-train"), *base, f"hydra.run.dir={run_dir}", *overrides],
        cwd=run_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_mid_epoch_checkpoint(process: subprocess.Popen[str], run_dir: Path) -> None:
    """Return once last.pt holds a mid-epoch state (the run is then known to be mid-way)."""
    path = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {process.stderr.read()}")
        if path.is_file():
            state = torch.load(path, weights_only=True)
            if not state["epoch_done"] and state["step"] >= 2:
                return
        time.sleep(0.01)
    pytest.fail("no mid-epoch checkpoint appeared")


def finish(run_dir: Path, *overrides: str, base: list[str] = LONG_RUN) -> None:
    process = start_training(run_dir, *overrides, base=base)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr


def assert_same_state(a: Path, b: Path) -> None:
    first = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    second = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert first["step"] == second["step"]
    for key, tensor in first["model"].items():
        torch.testing.assert_close(second["model"][key], tensor, rtol=0, atol=0)
    for index, state in first["optimizer"]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(
                second["optimizer"]["state"][index][name], value, rtol=0, atol=0
            )


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
        fit(train_config("trainer.epochs=2", "seed=7", "model=alexnet"), tmp_path / name)
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
    with pytest.raises(RuntimeError, match="killed while writing"):
        fit(train_config("trainer.epochs=2"), tmp_path)
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
        fit(train_config(), tmp_path)


def test_a_non_finite_loss_stops_at_once_without_a_nan_checkpoint(train_config, tmp_path):
    with pytest.raises(UserError, match="non-finite at step") as raised:
        fit(
            train_config(
                "optimizer.lr=1e30", "trainer.checkpoint_every_steps=1", "trainer.epochs=3"
            ),
            tmp_path,
        )
    step = int(str(raised.value).split("at step ")[1].split()[0])
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
    with pytest.raises(UserError, match="weights-only"):
        run_eval(compose_config("eval", [f"checkpoint={evil}", "device=cpu"]), tmp_path)
    with pytest.raises(UserError, match="weights-only"):
        fit(train_config(f"model.weights={evil}"), tmp_path)
    with pytest.raises(UserError, match="weights-only"):
        fit(train_config(f"resume={evil}"), tmp_path)
    assert not marker.exists()


def test_a_target_in_the_config_is_refused(train_config) -> None:
    with pytest.raises(UserError, match=r"model\._target_ is not accepted"):
        validate_train(train_config("+model._target_=os.system"))


def test_resume_auto_with_nothing_to_resume_starts_fresh(train_config, tmp_path: Path) -> None:
    run_dir = tmp_path / "outputs" / "day" / "run"
    run_dir.mkdir(parents=True)
    summary = fit(train_config("resume=auto"), run_dir)
    assert summary["step"] == 4 and summary["run_dir"] == str(run_dir)


def test_resume_auto_finds_the_newest_run_of_the_same_config(train_config, tmp_path) -> None:
    first = tmp_path / "outputs" / "day" / "first"
    other = tmp_path / "outputs" / "day" / "other"
    new, newer = tmp_path / "outputs" / "day" / "new", tmp_path / "outputs" / "day" / "newer"
    for folder, overrides in ((first, ()), (other, ("seed=3",))):
        (folder / ".hydra").mkdir(parents=True)
        cfg = train_config("trainer.epochs=1", *overrides)
        (folder / ".hydra" / "config.yaml").write_text(OmegaConfYaml.dump(cfg))
        fit(cfg, folder)
    new.mkdir()
    newer.mkdir()
    summary = fit(train_config("trainer.epochs=2", "resume=auto"), new)
    assert summary["run_dir"] == str(new)
    summary = fit(train_config("trainer.epochs=1", "resume=auto"), newer)
    assert summary["run_dir"] == str(first)


def test_missing_resume_path_is_a_user_error(tmp_path: Path) -> None:
    result = run_cli("cnn-train", "resume=nowhere", "device=cpu", cwd=tmp_path)
    assert result.returncode == 1 and "resume=nowhere: no checkpoint there" in result.stderr


class OmegaConfYaml:
    @staticmethod
    def dump(cfg) -> str:
        from omegaconf import OmegaConf

        return OmegaConf.to_yaml(cfg)
