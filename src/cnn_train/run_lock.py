"""One writer per run folder: an advisory lock that dies with the process holding it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cnn_train.errors import UserError

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive `flock` on `<run_dir>/.lock`, held by rank 0 for the whole run.

    The kernel releases it when its holder exits, however it exits (SIGKILL included), so a
    requeued job or a restarted torchrun group takes it again; a second live process on the same
    folder is refused with the holder's pid.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise UserError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open: the lock lives with it)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(
                f"{self.path.parent} is in use by process {holder}; wait for it to end, or "
                "write this run elsewhere (hydra.run.dir=...)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Let go of the lock (the file stays; it is only a lock)."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, *, enabled: bool = True) -> Iterator[RunLock | None]:
    """Hold `run_dir`'s lock for the block (rank 0 only: other ranks pass enabled=False)."""
    if not enabled:
        yield None
        return
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
