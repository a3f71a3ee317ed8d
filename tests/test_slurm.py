"""Sweeps through a real one-node SLURM cluster (scripts/slurm_local.sh): DDP jobs of 2 ranks,
Ctrl-C cancelling the queued jobs, and jobs requeued mid-epoch that resume bitwise equal."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import console_script, read_metrics
from tests.helpers.runs import CLUSTER_RUN, assert_same_state

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parents[1] / "scripts" / "slurm_local.sh"
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.nodes=1",
    "hydra.launcher.tasks_per_node=2",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=60",
]
RUN = CLUSTER_RUN


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """The local cluster, up for this module's tests and down after them."""
    if os.geteuid() != 0 or not (shutil.which("apt-get") or shutil.which("sbatch")):
        pytest.skip("scripts/slurm_local.sh needs root on Debian or Ubuntu")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    subprocess.run(["bash", str(SCRIPT), "up"], check=True, timeout=900)
    yield
    subprocess.run(["bash", str(SCRIPT), "down"], check=True, timeout=300)
    alive = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True)
    assert " running" not in alive.stdout, alive.stdout


def start_sweep(cwd: Path, *overrides: str) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [console_script("cnn-train"), "-m", *LAUNCHER, *overrides]
    log = open(cwd / "sweep.log", "w")  # noqa: SIM115 (the sweep writes it)
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log, text=True)


def finish_sweep(process: subprocess.Popen[str], cwd: Path) -> str:
    process.wait(timeout=1500)
    output = (cwd / "sweep.log").read_text()
    assert process.returncode == 0, output[-4000:]
    return output


def sweep_dir(cwd: Path) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list((cwd / "outputs" / "multirun").glob("*/*"))
        if found:
            return found[0]
        time.sleep(0.2)
    pytest.fail("the sweep made no folder")


def job_ids(sweep: Path) -> list[str]:
    """The ids of the SLURM jobs (or array tasks) that submitit queued for the sweep."""
    return sorted(path.parent.name for path in (sweep / ".submitit").glob("*/*_submitted.pkl"))


def final_states(jobs: list[str]) -> dict[str, str]:
    """SLURM's accounting state of each job once none is queued or running any more."""
    command = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(jobs)]
    deadline = time.monotonic() + 120
    while True:
        lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        states = dict(line.split("|", 1) for line in lines.splitlines() if line)
        busy = ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "CONFIGURING")
        if not any(state.startswith(busy) for state in states.values()):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"SLURM jobs still busy: {states}")
        time.sleep(1)


def wait_for_mid_epoch_checkpoint(run_dir: Path, step: int) -> None:
    path, deadline = run_dir / "checkpoints" / "last.pt", time.monotonic() + 900
    while time.monotonic() < deadline:
        if path.is_file():
            state = torch.load(path, weights_only=True)
            if not state["epoch_done"] and state["step"] >= step:
                return
        time.sleep(0.1)
    pytest.fail("no mid-epoch checkpoint appeared")


def skip_the_requeue_hold(job: str) -> None:
    """SLURM holds a requeued batch job for two minutes (reason BeginTime); make it eligible now."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        reason = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True, text=True
        ).stdout.strip()
        if reason == "BeginTime":
            subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=True)
            return
        time.sleep(0.5)
    pytest.fail(f"job {job} was not requeued")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same job run straight through on this machine: 2 gloo processes, no scheduler."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    command = [console_script("cnn-train"), *RUN, "device.num_procs=2", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=run_dir.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


def test_a_sweep_runs_each_job_as_two_ddp_ranks_and_writes_the_summary(
    cluster: None, tmp_path: Path
) -> None:
    quick = [*RUN, "data.train_samples=32", "trainer.epochs=1", "optimizer.lr=0.05,0.1"]
    output = finish_sweep(start_sweep(tmp_path, *quick), tmp_path)
    sweep = sweep_dir(tmp_path)
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [row["status"] for row in rows] == ["completed", "completed"], output[-4000:]
    for row in rows:
        assert read_metrics(sweep / row["job"])[-1]["val_samples"] == 31
        assert "cpu x2" in (sweep / row["job"] / "train.log").read_text()
    assert set(final_states(job_ids(sweep)).values()) == {"COMPLETED"}


def test_ctrl_c_on_the_waiting_sweep_cancels_its_jobs(cluster: None, tmp_path: Path) -> None:
    everything = f"hydra.launcher.cpus_per_task={max(1, (os.cpu_count() or 2) // 2)}"
    process = start_sweep(tmp_path, *RUN, everything, "optimizer.lr=0.05,0.1")
    sweep, deadline = sweep_dir(tmp_path), time.monotonic() + 120
    while len(job_ids(sweep)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    jobs = job_ids(sweep)
    assert len(jobs) == 2
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    output = (tmp_path / "sweep.log").read_text()
    assert process.returncode == 130, output[-4000:]
    assert "cancelled the SLURM jobs" in output and "Traceback" not in output
    states = final_states(jobs)
    assert all(state.startswith("CANCELLED") for state in states.values()), states


@pytest.mark.parametrize(
    ("how", "interrupt"),
    [
        ("preempted: scontrol requeue", ["scontrol", "requeue"]),
        ("time limit near: SIGUSR2", ["scancel", "--signal=USR2"]),
    ],
)
def test_an_interrupted_job_is_requeued_and_resumes_bitwise_equal(
    cluster: None, reference: Path, tmp_path: Path, how: str, interrupt: list[str]
) -> None:
    process = start_sweep(tmp_path, *RUN, "seed=0")
    sweep = sweep_dir(tmp_path)
    deadline = time.monotonic() + 120
    while not list(sweep.glob("0_*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    (job_dir,) = sweep.glob("0_*")
    wait_for_mid_epoch_checkpoint(job_dir, step=2)
    (job,) = job_ids(sweep)
    subprocess.run([*interrupt, job], check=True)
    skip_the_requeue_hold(job)
    finish_sweep(process, tmp_path)
    log = (job_dir / "train.log").read_text()
    assert "stopping on signal" in log and "resumed from" in log, log[-4000:]
    assert_same_state(reference, job_dir)
    assert [line["epoch"] for line in read_metrics(job_dir)] == [0, 1, 2]
    (row,) = csv.DictReader((sweep / "summary.csv").open())
    assert row["status"] == "completed"
