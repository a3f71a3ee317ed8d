"""Sweep results: each job's `result.json`, and the table a multirun ends with (`summary.csv`)."""

from __future__ import annotations

import csv
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

from cnn_train.table import text_table

RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.csv"
COLUMNS = ("job", "status", "best_val_acc1", "best_epoch", "overrides", "error")


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Record how a job ended: `status` (`completed` or `failed`) and its result or error."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT_FILE).write_text(json.dumps(result) + "\n")


def _job_number(job_dir: Path) -> tuple[int, str]:
    number, _, _ = job_dir.name.partition("_")
    return (int(number) if number.isdigit() else sys.maxsize, job_dir.name)


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder under `sweep_dir`, in job order."""
    rows = []
    job_dirs = sorted(
        (path.parent.parent for path in sweep_dir.glob("*/.hydra/overrides.yaml")),
        key=_job_number,
    )
    for job_dir in job_dirs:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
        result_path = job_dir / RESULT_FILE
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
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


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write `summary.csv` into the sweep folder and return its rows."""
    rows = job_rows(sweep_dir)
    with open(sweep_dir / SUMMARY_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
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

    Through SLURM (`hydra/launcher=slurm`), Ctrl-C while the sweep waits cancels its jobs.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.get("launcher") or {}
        if str(launcher.get("_target_", "")).endswith(".SlurmLauncher"):
            cancel_on_interrupt(Path(str(launcher.submitit_folder)).parent)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_summary(sweep_dir)
        print(format_table(rows))
        print(f"sweep summary: {sweep_dir / SUMMARY_FILE}")
        failed = [row for row in rows if row["status"] != "completed"]
        if failed:
            print(f"{len(failed)} of {len(rows)} jobs failed", file=sys.stderr)
            sys.exit(1)
