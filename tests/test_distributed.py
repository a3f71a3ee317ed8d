"""Data-parallel training with 2 gloo processes on the CPU, as `device=ddp` runs on GPUs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from cnn_train.distributed import launched_by_torchrun
from tests.helpers import compose_config, console_script, read_metrics, run_cli
from tests.helpers.runs import (
    assert_same_state,
    finish,
    start_training,
    wait_for_mid_epoch_checkpoint,
)

DDP = [
    "device=ddp",
    "device.num_procs=2",
    "data=synthetic",
    "data.native_size=8",
    "data.train_samples=64",
    "data.val_samples=31",
    "data.batch_size=8",
    "trainer.epochs=2",
]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("ddp")
    result = run_cli("cnn-train", *DDP, f"hydra.run.dir={cwd / 'run'}", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "run"


def test_one_run_folder_one_event_file_checkpoints_written_once(ddp_run: Path) -> None:
    assert len(list((ddp_run / "tb").glob("events.out.tfevents.*"))) == 1
    assert sorted(path.name for path in (ddp_run / "checkpoints").iterdir()) == [
        "best.pt",
        "last.pt",
    ]
    assert len(list(ddp_run.rglob("metrics.jsonl"))) == 1
    state = torch.load(ddp_run / "checkpoints" / "last.pt", weights_only=True)
    assert len(state["rng"]) == 2 and not any(key.startswith("module.") for key in state["model"])


def test_batches_are_per_process_and_val_counts_every_sample_once(ddp_run: Path) -> None:
    lines = read_metrics(ddp_run)
    assert [line["step"] for line in lines] == [4, 8]  # 64 images / (8 per process x 2)
    assert all(line["val_samples"] == 31 for line in lines)


@pytest.mark.slow
def test_one_process_eval_reproduces_the_two_process_val_accuracy(ddp_run: Path) -> None:
    checkpoint = ddp_run / "checkpoints" / "last.pt"
    result = run_cli("cnn-eval", f"checkpoint={checkpoint}", "device=cpu", cwd=ddp_run.parent)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout.strip().splitlines()[-1])
    last = read_metrics(ddp_run)[-1]
    assert evaluated["samples"] == 31 and evaluated["acc1"] == last["val_acc1"]
    assert evaluated["loss"] == pytest.approx(last["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_ddp_run_resumes_into_its_folder(ddp_run: Path) -> None:
    result = run_cli(
        "cnn-train",
        *DDP,
        "trainer.epochs=3",
        f"resume={ddp_run}",
        f"hydra.run.dir={ddp_run.parent / 'again'}",
        cwd=ddp_run.parent,
    )
    assert result.returncode == 0, result.stderr
    assert [line["epoch"] for line in read_metrics(ddp_run)] == [0, 1, 2]


@pytest.mark.slow
def test_sync_bn_on_the_cpu_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(
        "cnn-train",
        *DDP,
        "device.sync_bn=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "device.sync_bn=true needs GPUs" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_error(tmp_path: Path) -> None:
    result = run_cli(
        "cnn-train", *DDP, "data.batch_size=40", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "data.batch_size" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_equal_for_two_processes(tmp_path: Path) -> None:
    ddp = ["device=ddp", "device.num_procs=2", "data.batch_size=8"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish(straight, *ddp)
    process = start_training(killed, *ddp)
    wait_for_mid_epoch_checkpoint(process, killed)
    process.kill()
    process.wait(timeout=30)
    finish(killed, *ddp, "resume=auto")
    assert_same_state(straight, killed)


def test_the_slurm_launcher_composes_one_task_per_gpu() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_config("train", ["hydra/launcher=slurm", "device=ddp"], with_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8


def test_a_slurm_task_joins_the_job_as_its_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    ):
        # Set before deleting, so that monkeypatch also removes what submitit's export adds:
        # a RANK left behind makes every later subprocess in this session act as a worker.
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    slurm = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "node1",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NNODES": "1",
        "SLURM_TASKS_PER_NODE": "2",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert launched_by_torchrun()
    # asked again (the CLI, the config checks and the launcher each ask), it must not export twice
    assert launched_by_torchrun()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"]) == (
        "1",
        "2",
        "node1",
    )


@pytest.mark.slow
def test_torchrun_with_a_pinned_run_folder_makes_one_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    torchrun = console_script("torchrun")
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "cnn_train.cli",
        *DDP,
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("best val top-1") == 1
    assert [line["step"] for line in read_metrics(run_dir)] == [4, 8]
    assert all(line["val_samples"] == 31 for line in read_metrics(run_dir))
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1
