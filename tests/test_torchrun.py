"""torchrun across two "nodes" on this machine: one run, and an elastic restart resuming exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from cnn_train.distributed import free_port
from tests.helpers import console_script, read_metrics
from tests.helpers.runs import CLUSTER_RUN, assert_same_state

pytestmark = pytest.mark.slow

RUN = CLUSTER_RUN


def start_agents(run_dir: Path, *torchrun_args: str) -> list[subprocess.Popen[str]]:
    """The README's two-machine recipe, both "machines" on 127.0.0.1: one torchrun agent each."""
    port, logs = free_port(), run_dir.parent / f"{run_dir.name}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    agents = []
    for node_rank in (0, 1):
        command = [
            console_script("torchrun"),
            "--nnodes=2",
            "--nproc_per_node=1",
            f"--node_rank={node_rank}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            *torchrun_args,
            "-m",
            "cnn_train.cli",
            *RUN,
            f"hydra.run.dir={run_dir}",
        ]
        out = open(logs / f"node{node_rank}.log", "w")  # noqa: SIM115 (the agent writes it)
        agents.append(
            subprocess.Popen(
                command, cwd=run_dir.parent, env=env, stdout=out, stderr=out, text=True
            )
        )
    return agents


def wait_for(agents: list[subprocess.Popen[str]], run_dir: Path) -> str:
    """Wait for both agents to exit 0; return what they printed."""
    for agent in agents:
        agent.wait(timeout=900)
    logs = run_dir.parent / f"{run_dir.name}-logs"
    output = "".join(path.read_text() for path in sorted(logs.glob("node*.log")))
    assert [agent.returncode for agent in agents] == [0, 0], output[-4000:]
    return output


def worker_of(agent: subprocess.Popen[str]) -> int:
    """The pid of the training process that a torchrun agent started."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == agent.pid:
                return int(stat.parent.name)
        time.sleep(0.1)
    pytest.fail("the torchrun agent started no worker")


def wait_for_mid_epoch_checkpoint(run_dir: Path) -> None:
    """Return once last.pt holds a mid-epoch state (the run is then known to be mid-way)."""
    path, deadline = run_dir / "checkpoints" / "last.pt", time.monotonic() + 600
    while time.monotonic() < deadline:
        if path.is_file():
            state = torch.load(path, weights_only=True)
            if not state["epoch_done"] and state["step"] >= 2:
                return
        time.sleep(0.05)
    pytest.fail("no mid-epoch checkpoint appeared")


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("torchrun") / "straight"
    return run_dir, wait_for(start_agents(run_dir), run_dir)


def test_two_agents_make_one_run_that_counts_every_val_sample_once(straight) -> None:
    run_dir, output = straight
    assert output.count("best val top-1") == 1
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1
    assert [line["step"] for line in read_metrics(run_dir)] == [4, 8, 12]  # 64 / (8 x 2)
    assert all(line["val_samples"] == 31 for line in read_metrics(run_dir))
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert len(state["rng"]) == 2 and not any(key.startswith("module.") for key in state["model"])


def test_a_killed_worker_restarts_the_group_which_resumes_bitwise_equal(straight) -> None:
    reference, _ = straight
    run_dir = reference.parent / "killed"
    agents = start_agents(run_dir, "--max-restarts=1")
    wait_for_mid_epoch_checkpoint(run_dir)
    os.kill(worker_of(agents[1]), signal.SIGKILL)
    output = wait_for(agents, run_dir)
    assert "resumed from" in (run_dir / "train.log").read_text(), output[-4000:]
    assert_same_state(reference, run_dir)
    assert [line["epoch"] for line in read_metrics(run_dir)] == [0, 1, 2]
