"""One run per folder: a folder that already holds a run is never started in again without
`resume=`. Checked by a Hydra callback before Hydra writes the folder's `.hydra/` files, so a
refused start changes nothing there. Hydra turns a callback's exception into a warning and goes
on, so a refusal ends the program itself (`SystemExit`: its line on stderr, exit 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# What a run leaves in its folder once it has started (train.log is appended by every start,
# refused ones included, so it does not count).
RUN_MARKERS = ("checkpoints/last.pt", "metrics.jsonl", "run.json", "result.json", "tb")


def run_marker(folder: Path) -> str | None:
    """The first sign that `folder` holds a run, or None."""
    return next((marker for marker in RUN_MARKERS if (folder / marker).exists()), None)


def refuse(reason: str) -> None:
    """End the program: `error: <reason>` on stderr, exit status 1, no traceback."""
    raise SystemExit(f"error: {reason}")


def starts_a_new_run(config: DictConfig) -> bool:
    """Whether this start is a new run, not a continuation: no `resume=`, not a job that SLURM
    requeued or torchrun restarted, and not a rank other than 0 joining its job's folder."""
    from cnn_train.distributed import launcher_rank
    from cnn_train.engine.resume import restarted_by_launcher

    return not config.get("resume") and not restarted_by_launcher() and launcher_rank() == 0


def pinned_folder(config: DictConfig, key: str) -> Path | None:
    """The folder `key` names; None when it cannot be resolved (a folder that cannot be created,
    say), which Hydra then reports itself in one line as it makes the folder."""
    try:
        return Path(OmegaConf.select(config, key, throw_on_missing=True))
    except Exception:  # any failure here is Hydra's to report, once
        return None


class RunFolderGuard(Callback):
    """Refuses a start whose run folder (or pinned sweep folder) holds runs already."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = pinned_folder(config, "hydra.run.dir")
        found = run_marker(run_dir) if run_dir else None
        if found and starts_a_new_run(config):
            refuse(
                f"{run_dir} already holds a run ({found}); continue it with resume=auto, or "
                "start this one in a new folder (leave hydra.run.dir unset, or name another)"
            )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = pinned_folder(config, "hydra.sweep.dir")
        jobs = sorted(sweep_dir.iterdir()) if sweep_dir and sweep_dir.is_dir() else []
        found = next(
            (job / run_marker(job) for job in jobs if job.is_dir() and run_marker(job)), None
        )
        if found and starts_a_new_run(config):
            refuse(
                f"{sweep_dir} already holds a sweep's runs ({found.relative_to(sweep_dir)}); "
                "continue them with resume=auto, or start this sweep in a new folder (leave "
                "hydra.sweep.dir unset, or name another)"
            )
