"""A run folder is one run: never reused without resume=, ranks that cannot wait on each other,
and what a Ctrl-C or a tool's bad value says. Each case runs the installed console scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import QUICK, console_script, run_cli

ALEXNET = [*QUICK, "model=alexnet"]  # the quickest model at 8 px


def fingerprint(run_dir: Path) -> dict[str, bytes]:
    """Every file a run wrote, by its path in the folder (train.log aside: each start logs)."""
    return {
        str(path.relative_to(run_dir)): path.read_bytes()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and path.name not in ("train.log", ".lock")
    }


def test_a_folder_that_holds_a_run_is_never_reused_without_resume(tmp_path: Path) -> None:
    first = run_cli("cnn-train", *ALEXNET, "hydra.run.dir=prev", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = fingerprint(tmp_path / "prev")
    again = run_cli(
        "cnn-train", *ALEXNET, "hydra.run.dir=prev", "seed=3", "optimizer.lr=0.5", cwd=tmp_path
    )
    assert again.returncode == 1
    lines = again.stderr.strip().splitlines()
    assert "already holds a run" in lines[-1] and "resume=auto" in lines[-1]
    assert "Traceback" not in again.stderr
    assert fingerprint(tmp_path / "prev") == before  # checkpoints, metrics, events, result kept
    resumed = run_cli(
        "cnn-train", *ALEXNET, "hydra.run.dir=prev", "resume=auto", "trainer.epochs=2", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr


def test_a_used_sweep_folder_is_refused_before_any_job_and_resumed_with_resume_auto(
    tmp_path: Path,
) -> None:
    sweep = ["-m", *ALEXNET, "seed=1,2", "hydra.sweep.dir=sweep"]
    assert run_cli("cnn-train", *sweep, cwd=tmp_path).returncode == 0
    before = fingerprint(tmp_path / "sweep")
    assert sum(name.endswith("result.json") for name in before) == 2
    again = run_cli("cnn-train", *sweep, "optimizer.lr=0.5", cwd=tmp_path)
    assert again.returncode == 1
    assert "already holds a sweep's runs" in again.stderr.strip().splitlines()[-1]
    assert fingerprint(tmp_path / "sweep") == before  # jobs, their .hydra/ and summary.csv
    resumed = run_cli("cnn-train", *sweep, "resume=auto", "trainer.epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_ddp_ranks_with_uneven_validation_batches_finish(tmp_path: Path) -> None:
    """One validation image for two ranks: rank 1 has no batch, and must not hang rank 0."""
    done = run_cli(
        "cnn-train",
        *QUICK,
        "model=vgg16",  # BatchNorm buffers: DDP's forward would broadcast them
        "device=ddp",
        "device.num_procs=2",
        "data.val_samples=1",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best val top-1" in done.stdout


def test_rank_variables_left_in_the_shell_do_not_make_ddp_wait(tmp_path: Path) -> None:
    stray = {"RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "10.255.255.1", "MASTER_PORT": "9"}
    done = run_cli(
        "cnn-train",
        *ALEXNET,
        "device=ddp",
        "device.num_procs=2",
        "hydra.run.dir=run",
        cwd=tmp_path,
        env=stray,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ignoring RANK, WORLD_SIZE, MASTER_ADDR in the environment" in done.stderr
    assert "best val top-1" in done.stdout  # rank 0 reports, though RANK=1 was in the shell


def test_one_ctrl_c_during_start_up_says_nothing_was_being_saved(tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    environment.pop("HYDRA_FULL_ERROR", None)
    process = subprocess.Popen(
        [console_script("cnn-train"), *ALEXNET, "hydra.run.dir=run"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # the interpreter is up; training has not started (imports take longer)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "error: interrupted; nothing was being saved"
    assert "again" not in stderr and "Traceback" not in stderr


def test_the_inference_tools_check_every_value_before_reading_the_checkpoint(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "absent.pt")  # never read: the value is refused first
    cases = [
        ("cnn-eval", f"checkpoint={missing}", "limit_batches=0", "limit_batches must be >= 1"),
        ("cnn-eval", f"checkpoint={missing}", "data.eval_batch_size=-3", "eval_batch_size"),
        ("cnn-predict", f"checkpoint={missing}", "images=a.png topk=0", "topk must be in [1, "),
        ("cnn-export", f"checkpoint={missing}", "format=onnx tolerance=-1", "tolerance must be"),
    ]
    for tool, checkpoint, overrides, message in cases:
        done = run_cli(tool, checkpoint, *overrides.split(), cwd=tmp_path)
        assert done.returncode == 1, (tool, overrides, done.stderr)
        assert message in done.stderr.strip().splitlines()[-1], (tool, done.stderr)
