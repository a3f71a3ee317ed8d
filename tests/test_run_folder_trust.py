"""A run folder is one run: never reused without resume=, ranks that cannot wait on each other,
and what a Ctrl-C or a tool's bad value says. Each case runs the installed console scripts."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from cnn_train.cli import _interruptible
from cnn_train.engine.loop import StopSignal
from cnn_train.errors import InterruptedAgain, UserError
from tests.helpers import QUICK, compose_config, run_cli

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


@pytest.mark.slow  # the single-run case above covers the same guard in the default suite
def test_a_used_sweep_folder_is_refused_before_any_job(tmp_path: Path) -> None:
    sweep = ["-m", *ALEXNET, "seed=1", "hydra.sweep.dir=sweep"]
    assert run_cli("cnn-train", *sweep, cwd=tmp_path).returncode == 0
    before = fingerprint(tmp_path / "sweep")
    assert sum(name.endswith("result.json") for name in before) == 1
    again = run_cli("cnn-train", *sweep, "optimizer.lr=0.5", cwd=tmp_path)
    assert again.returncode == 1
    assert "already holds a sweep's runs" in again.stderr.strip().splitlines()[-1]
    assert fingerprint(tmp_path / "sweep") == before  # jobs, their .hydra/ and summary.csv


def test_ddp_ranks_neither_wait_on_uneven_validation_nor_on_rank_variables_in_the_shell(
    tmp_path: Path,
) -> None:
    """One validation image for two ranks: rank 1 has no batch, and must not hang rank 0; and
    RANK/WORLD_SIZE/MASTER_ADDR left in the shell must not make the job wait for ranks."""
    stray = {"RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "10.255.255.1", "MASTER_PORT": "9"}
    done = run_cli(
        "cnn-train",
        *QUICK,
        "model=vgg16",  # BatchNorm buffers: DDP's forward would broadcast them
        "device=ddp",
        "device.num_procs=2",
        "data.val_samples=1",
        "hydra.run.dir=run",
        cwd=tmp_path,
        env=stray,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ignoring RANK, WORLD_SIZE, MASTER_ADDR in the environment" in done.stderr
    assert "best val top-1" in done.stdout  # rank 0 reports, though RANK=1 was in the shell


@pytest.mark.parametrize(
    ("raised", "line"),
    [
        (KeyboardInterrupt, "error: interrupted; nothing was being saved"),
        (InterruptedAgain, "error: interrupted again before the save finished; the last "),
    ],
)
def test_a_ctrl_c_says_whether_a_save_was_under_way(raised, line, capsys) -> None:
    """One Ctrl-C outside training (start-up, a tool) saved nothing; only the stop handler's
    second Ctrl-C, during the first one's save, is "interrupted again"."""

    def main() -> None:
        raise raised

    with pytest.raises(SystemExit) as ended:
        _interruptible(main)
    assert ended.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(line)


def test_the_stop_handler_turns_a_second_ctrl_c_into_interrupted_again() -> None:
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first asks to stop after the step
        assert stop.received == signal.SIGINT
        with pytest.raises(InterruptedAgain):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes; it raises before this ends


@pytest.mark.parametrize(
    ("config", "tool", "overrides", "message"),
    [
        ("eval", "eval", ["limit_batches=0"], "limit_batches must be >= 1"),
        ("predict", "predict", ["images=a.png", "topk=0"], "topk must be in [1, "),
        ("export", "export", ["format=onnx", "tolerance=-1"], "tolerance must be >= 0"),
    ],
)
def test_the_inference_tools_check_every_value_before_reading_the_checkpoint(
    config: str, tool: str, overrides: list[str], message: str, tmp_path: Path
) -> None:
    """What each console script runs once its config is composed (`cli._eval` for cnn-eval...),
    in-process: the value is refused before the missing checkpoint is ever opened."""
    from cnn_train import cli
    from cnn_train.engine.evaluator import eval_checkpoint

    missing = tmp_path / "absent.pt"
    cfg = compose_config(config, [f"checkpoint={missing}", *overrides])
    run = {
        "eval": lambda: eval_checkpoint(cfg, tmp_path),
        "predict": lambda: cli._predict(cfg),
        "export": lambda: cli._export(cfg),
    }[tool]
    with pytest.raises(UserError, match=re.escape(message)):
        run()
