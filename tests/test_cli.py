"""The installed console scripts, run as a user runs them: from another directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import QUICK, run_cli


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One quick training run through the installed `cnn-train`, in a fresh directory."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run_cli("cnn-train", *QUICK, "trainer.epochs=2", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result.stdout


def test_cnn_train_writes_a_run_folder_under_outputs(cli_run: tuple[Path, str]) -> None:
    cwd, stdout = cli_run
    (run_dir,) = (cwd / "outputs").glob("*/*_resnet34-synthetic")
    for name in (
        ".hydra/config.yaml",
        "train.log",
        "run.json",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run_dir / name).is_file(), name
    assert "epoch 2/2" in (run_dir / "train.log").read_text()
    last_line = stdout.strip().splitlines()[-1]
    assert "best val top-1" in last_line and str(run_dir) in last_line
    assert "tensorboard --logdir" in last_line


def test_cnn_eval_prints_the_eval_record_as_its_last_line(cli_run: tuple[Path, str]) -> None:
    cwd, _ = cli_run
    (checkpoint,) = (cwd / "outputs").glob("*/*_resnet34-synthetic/checkpoints/best.pt")
    result = run_cli("cnn-eval", f"checkpoint={checkpoint}", "device=cpu", cwd=cwd)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"checkpoint", "split", "samples", "loss", "acc1", "acc5"} <= set(record)
    metrics = [json.loads(line) for line in (checkpoint.parents[1] / "metrics.jsonl").open()]
    assert record["acc1"] == max(m["val_acc1"] for m in metrics)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimizer.lr=-1"], "optimizer.lr must be > 0"),
        (["model=alexnet", "data.image_size=32"], "data.image_size=63"),
        pytest.param(
            ["device=cuda"],
            "use device=cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible"),
        ),
    ],
)
def test_bad_values_exit_1_with_one_line_and_no_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("cnn-train", *QUICK, *args, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochs=abc", "could not be converted to Integer"),
        ("optimizer.momentun=0.9", "Key 'momentun' not in 'SGDConfig'"),
    ],
)
def test_a_wrong_type_or_key_exits_1_with_one_line(
    tmp_path: Path, override: str, message: str
) -> None:
    result = run_cli("cnn-train", override, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert override.split("=")[0] in result.stderr and message in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_an_unknown_model_lists_the_valid_ones(tmp_path: Path) -> None:
    result = run_cli("cnn-train", "model=vgg17", cwd=tmp_path)
    assert result.returncode == 1
    for name in ("alexnet", "resnet34", "vgg16"):
        assert name in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "checkpoint is required"), (["checkpoint=missing.pt"], "checkpoint not found")],
)
def test_cnn_eval_without_a_usable_checkpoint_exits_1(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("cnn-eval", *args, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_help_cut_short_by_its_reader_ends_quietly(tmp_path: Path) -> None:
    """`cnn-train --help | head -1`: the reader closes the pipe (here before anything is
    written, so the write always finds it closed); no traceback follows."""
    import subprocess

    from tests.helpers import console_script

    process = subprocess.Popen(
        [console_script("cnn-train"), "--help"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
