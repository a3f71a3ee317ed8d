"""Sweep results: each job's `result.json`, and the table a multirun ends with (`summary.csv`)."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from cnn_train.files import write_text_atomically
from cnn_train.table import text_table

RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.csv"
COLUMNS = ("job", "status", "best_val_acc1", "best_epoch", "overrides", "error")


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Record how a job ended: `status` (`completed` or `failed`) and its result or error."""
    write_text_atomically(run_dir / RESULT_FILE, json.dumps(result) + "\n", what="result")


class FailedJob:
    """What a failed job returns to the sweeper: not a number, so that Optuna records a failed
    trial (`float()` raises) and goes on with the next trial."""

    def __init__(self, error: str) -> None:
        self.error = error

    def __float__(self) -> float:
        raise ValueError(self.error)

    def __repr__(self) -> str:
        return f"failed job ({self.error})"


Stamps = dict[str, tuple[int, int]]


def _job_number(job_dir: Path) -> tuple[int, str]:
    number, _, _ = job_dir.name.partition("_")
    return (int(number) if number.isdigit() else sys.maxsize, job_dir.name)


def job_stamps(sweep_dir: Path) -> Stamps:
    """Each job folder's `.hydra/overrides.yaml` (inode, mtime): Hydra rewrites it when a job
    starts, so a job of a later multirun in the same folder has another stamp."""
    stamps = {}
    for path in sweep_dir.glob("*/.hydra/overrides.yaml"):
        stat = path.stat()
        stamps[path.parent.parent.name] = (stat.st_ino, stat.st_mtime_ns)
    return stamps


def _result(job_dir: Path) -> dict[str, Any]:
    """The job's result.json, unless it is older than the job's start (an earlier job's)."""
    path = job_dir / RESULT_FILE
    started = (job_dir / ".hydra" / "overrides.yaml").stat().st_mtime_ns
    if not path.is_file() or path.stat().st_mtime_ns < started:
        return {}
    return json.loads(path.read_text())


def job_rows(sweep_dir: Path, before: Stamps | None = None) -> list[dict[str, Any]]:
    """One row per job folder under `sweep_dir`, in job order; with `before` (the stamps when
    the multirun started), only the jobs this multirun ran."""
    rows = []
    before = before or {}
    job_dirs = sorted(
        (
            sweep_dir / name
            for name, stamp in job_stamps(sweep_dir).items()
            if before.get(name) != stamp
        ),
        key=_job_number,
    )
    for job_dir in job_dirs:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
        result = _result(job_dir)
        rows.append(
            {
                "job": job_dir.name,
                "status": result.get("status", "failed"),
                "best_val_acc1": result.get("best_val_acc1", ""),
                "best_epoch": result.get("best_epoch", ""),
                "overrides": " ".join(overrides),
                "error": result.get("error", "" if result else "the job wrote no result"),
            }
        )
    return rows


def _varying(rows: list[dict[str, Any]]) -> list[str]:
    """Per row, only the overrides whose value differs between jobs (what the sweep varied)."""
    split = [dict(item.partition("=")[::2] for item in row["overrides"].split()) for row in rows]
    keys = {key for overrides in split for key in overrides}
    varied = [key for key in sorted(keys) if len({o.get(key) for o in split}) > 1]
    return [" ".join(f"{k}={o[k]}" for k in varied if k in o) for o in split]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the jobs: number, varied overrides, status, best val top-1, error."""
    headers = ["job", "overrides", "status", "best val top-1", "error"]
    cells = [
        [
            row["job"].partition("_")[0],
            overrides,
            row["status"],
            f"{row['best_val_acc1']:.4f}" if isinstance(row["best_val_acc1"], float) else "",
            str(row["error"]),
        ]
        for row, overrides in zip(rows, _varying(rows), strict=True)
    ]
    return "\n".join(text_table([headers, *cells]))


def write_summary(sweep_dir: Path, before: Stamps | None = None) -> list[dict[str, Any]]:
    """Write `summary.csv` into the sweep folder and return its rows."""
    rows = job_rows(sweep_dir, before)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(sweep_dir / SUMMARY_FILE, text.getvalue(), what="sweep summary")
    return rows


def cancel_on_interrupt(submitit_dir: Path) -> None:
    """Make Ctrl-C on the waiting `cnn-train -m` cancel the SLURM jobs it queued, then exit 130.

    submitit keeps a folder per job id (`123_0`, and `123` for the array) under `submitit_dir`.
    """

    def cancel(signal_number: int, frame: FrameType | None) -> None:
        folders = submitit_dir.glob("*") if submitit_dir.is_dir() else []
        jobs = sorted(path.name for path in folders if re.fullmatch(r"\d+(_\d+)?", path.name))
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True, check=False)
            print(f"interrupted: cancelled the SLURM jobs {' '.join(jobs)}", file=sys.stderr)
        sys.exit(130)

    signal.signal(signal.SIGINT, cancel)


class SweepSummary(Callback):
    """At the end of a multirun: print the jobs' table, write summary.csv, exit 1 if any failed.

    Only this multirun's jobs are summed up, even in a sweep folder used before. A sweeper or
    launcher that stops with an error (Optuna when no trial completed, a rejected sbatch)
    never reaches `on_multirun_end`: the console script then calls `finish_stopped_sweep`.
    Through SLURM (`hydra/launcher=slurm`), Ctrl-C while the sweep waits cancels its jobs.
    """

    running: SweepSummary | None = None  # the multirun under way in this process

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.before: Stamps = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self.sweep_dir = Path(config.hydra.sweep.dir)
        except OmegaConfBaseException:
            return  # no sweep folder: the launcher says why in one line
        self.before = job_stamps(self.sweep_dir) if self.sweep_dir.is_dir() else {}
        SweepSummary.running = self
        launcher = config.hydra.get("launcher") or {}
        if str(launcher.get("_target_", "")).endswith(".SlurmLauncher"):
            cancel_on_interrupt(Path(str(launcher.submitit_folder)).parent)

    def summarise(self) -> list[dict[str, Any]]:
        """Write summary.csv and print the table (nothing if no job started)."""
        SweepSummary.running = None
        if self.sweep_dir is None or not self.sweep_dir.is_dir():
            return []
        rows = write_summary(self.sweep_dir, self.before)
        if rows:
            print(format_table(rows))
            print(f"sweep summary: {self.sweep_dir / SUMMARY_FILE}")
        return rows

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        rows = self.summarise()
        failed = [row for row in rows if row["status"] != "completed"]
        if failed:
            print(f"{len(failed)} of {len(rows)} jobs failed", file=sys.stderr)
            sys.exit(1)


def finish_stopped_sweep() -> str:
    """Sum up a multirun whose sweeper or launcher stopped with an error; '' if none was under
    way, else a few words for the error line (how many jobs failed, where the summary is)."""
    sweep = SweepSummary.running
    if sweep is None:
        return ""
    rows = sweep.summarise()
    if not rows:
        return "no job ran"
    failed = sum(row["status"] != "completed" for row in rows)
    return f"{failed} of {len(rows)} jobs failed; summary: {sweep.sweep_dir / SUMMARY_FILE}"
