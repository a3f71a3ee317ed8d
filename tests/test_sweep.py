"""Sweeps: a job per combination, failures recorded, summary.csv, hparams in each run's events."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cnn_train.engine.trainer import run_training
from cnn_train.sweep import format_table, job_rows, write_result
from tests.helpers import QUICK, compose_config, run_cli


def hparams_of(run_dir: Path) -> tuple[dict, list[str]]:
    """The hparams a run's event file carries, and the files under its tb/ folder."""
    files = sorted(str(p.relative_to(run_dir / "tb")) for p in (run_dir / "tb").rglob("*"))
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values = {}
    for key, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    return values, files


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """`cnn-train -m` over two learning rates, one of them invalid."""
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_cli(
        "cnn-train", "-m", *QUICK, "trainer.max_steps=2", "optimizer.lr=0.05,-1", cwd=cwd
    )
    return cwd, result


def test_a_sweep_runs_every_job_in_a_folder_named_by_its_overrides(sweep) -> None:
    cwd, _ = sweep
    (sweep_dir,) = (cwd / "outputs" / "multirun").glob("*/*")
    names = sorted(path.name for path in sweep_dir.iterdir() if path.is_dir())
    assert len(names) == 2
    assert names[0].startswith("0_") and "optimizer.lr=0.05" in names[0]
    assert names[1].startswith("1_") and "optimizer.lr=-1" in names[1]


def test_a_failed_job_is_a_row_the_sweep_goes_on_and_exits_1(sweep) -> None:
    cwd, result = sweep
    assert result.returncode == 1
    (summary,) = (cwd / "outputs" / "multirun").glob("*/*/summary.csv")
    rows = list(csv.DictReader(summary.open()))
    assert [row["status"] for row in rows] == ["completed", "failed"]
    assert 0 <= float(rows[0]["best_val_acc1"]) <= 1
    assert "optimizer.lr must be > 0" in rows[1]["error"]
    assert "optimizer.lr=0.05" in rows[0]["overrides"]
    assert "Traceback" not in result.stderr
    table = result.stdout[result.stdout.index("job  overrides") :]
    assert "optimizer.lr=-1" in table and "failed" in table and "completed" in table
    assert "1 of 2 jobs failed" in result.stderr


def test_each_sweep_job_writes_its_hparams_into_its_own_event_file(sweep) -> None:
    cwd, _ = sweep
    (job,) = (cwd / "outputs" / "multirun").glob("*/*/0_*")
    values, files = hparams_of(job)
    assert values["optimizer.lr"] == pytest.approx(0.05)
    assert values["model.name"] == "resnet34"
    assert len(files) == 1 and files[0].startswith("events.out.tfevents")


def test_hparams_carry_the_final_val_metrics(train_config, tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.05\n- seed=3\n")
    best = run_training(train_config("optimizer.lr=0.05", "trainer.max_steps=2"), tmp_path)
    values, _ = hparams_of(tmp_path)
    assert values["seed"] == 3 and values["optimizer.name"] == "sgd"
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    (scalar,) = events.Scalars("val/best_acc1")
    assert scalar.value == pytest.approx(best["best_val_acc1"]) and scalar.step == 2
    assert "val/loss" in events.Tags()["scalars"]


def test_a_job_without_a_result_counts_as_failed(tmp_path: Path) -> None:
    for number, status in ((0, "completed"), (1, None)):
        job = tmp_path / f"{number}_optimizer.lr={number}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={number}\n")
        if status:
            write_result(job, {"status": status, "best_val_acc1": 0.5, "best_epoch": 0})
    rows = job_rows(tmp_path)
    assert [row["status"] for row in rows] == ["completed", "failed"]
    assert "no result" in rows[1]["error"]
    assert "0.5000" in format_table(rows)


def test_the_optuna_sweeper_config_searches_lr_and_weight_decay() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")

    cfg = compose_config("train", ["hydra/sweeper=lr_wd"], with_hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize"
    assert set(sweeper.params) == {"optimizer.lr", "optimizer.weight_decay"}
    assert sweeper.params["optimizer.lr"].startswith("tag(log")
