"""The run's log file: one format, the one Hydra's job logging config gives it."""

from __future__ import annotations

import logging
from pathlib import Path

FALLBACK_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def file_log_format() -> str:
    """The format of the log file that Hydra set up for this job (configs/hydra/job_logging)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.formatter is not None:
            return handler.formatter._fmt or FALLBACK_FORMAT
    return FALLBACK_FORMAT


def also_log_to(path: Path, log_format: str | None = None) -> None:
    """Append this process's log records to `path` too (a resumed run's or a worker's log)."""
    root = logging.getLogger()
    target = str(Path(path).resolve())
    if any(getattr(h, "baseFilename", None) == target for h in root.handlers):
        return  # Hydra's own log file already is that file
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(log_format or file_log_format()))
    root.addHandler(handler)
