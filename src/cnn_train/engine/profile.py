"""A profile of the run's own steps (`trainer.profile_steps=[A,B]`): torch.profiler over steps
A..B, written as profile/trace.json (Perfetto, chrome://tracing) and profile/top_ops.txt."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from cnn_train.files import write_text_atomically, write_through_temporary

log = logging.getLogger(__name__)
TOP_OPS = 30


class StepProfiler:
    """Profiles optimizer steps `first`..`last` (1-based), then writes what it saw."""

    def __init__(self, folder: Path, first: int, last: int) -> None:
        self.folder, self.first, self.last = folder, first, last
        self._profile: profile | None = None

    def after_step(self, step: int) -> None:
        """Called after each step (and once before the first): start or finish the window."""
        if step == self.first - 1 and self._profile is None:
            activities = [ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(ProfilerActivity.CUDA)
            self._profile = profile(activities=activities, record_shapes=True, profile_memory=True)
            self._profile.__enter__()
        elif step == self.last and self._profile is not None:
            self._finish()

    def close(self) -> None:
        """Write what was recorded if the run ends inside the window."""
        if self._profile is not None:
            self._finish()

    def _finish(self) -> None:
        recorded, self._profile = self._profile, None
        recorded.__exit__(None, None, None)
        self.folder.mkdir(parents=True, exist_ok=True)
        trace = self.folder / "trace.json"
        write_through_temporary(trace, lambda path: recorded.export_chrome_trace(str(path)))
        table = recorded.key_averages().table(sort_by="self_cpu_time_total", row_limit=TOP_OPS)
        write_text_atomically(self.folder / "top_ops.txt", table + "\n")
        log.info(f"profiled steps {self.first}-{self.last}: {trace} and top_ops.txt")
