"""When training must stop early: a signal (SIGINT/SIGTERM) or a non-finite loss."""

from __future__ import annotations

import signal
from types import FrameType, TracebackType

import torch
import torch.distributed as dist

from cnn_train.errors import Interrupted

# SIGUSR2: SLURM's warning before a time limit or a preemption (as submitit asks for it). The
# handler it displaces (submitit's, which requeues the job) gets it once the checkpoint is saved.
HANDED_ON = (signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ()
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *HANDED_ON)


class StopSignal:
    """Turns the first SIGINT/SIGTERM/SIGUSR2 into a request to stop after the current step.

    A second SIGINT interrupts at once, as Ctrl-C twice does elsewhere.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.received == signal.SIGINT and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal_number

    def __enter__(self) -> StopSignal:
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        previous = self._previous.get(self.received or 0)
        stopped = kind is not None and issubclass(kind, Interrupted)
        if stopped and self.received in HANDED_ON and callable(previous):
            previous(self.received, None)


# Device types whose flags are read one step late, so that the loop never waits for the device.
DEFERRED_DEVICE_TYPES = frozenset({"cuda"})


class StepGuard:
    """Checks after every step whether to stop; all ranks of a data-parallel job agree.

    On a GPU the check reads the flags of the previous step, copied to the host without
    blocking, so the loop never waits for the device; it still stops within one step, and
    `settle()` reads the last step's flags at once before anything is saved.
    """

    def __init__(self, device: torch.device, stop: StopSignal, *, check_finite: bool) -> None:
        self.device = device
        self.stop = stop
        self.check_finite = check_finite
        self.distributed = dist.is_available() and dist.is_initialized()
        self.deferred = device.type in DEFERRED_DEVICE_TYPES
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None, int] | None = None

    def after_step(self, loss: torch.Tensor, step: int) -> tuple[str, int] | None:
        """`("signal" | "nonfinite", step it concerns)` or None, for this step or the one before."""
        if not self.distributed and not self.deferred:
            if self.stop.received is not None:
                return "signal", step
            nonfinite = self.check_finite and not torch.isfinite(loss)
            return ("nonfinite", step) if nonfinite else None
        flags = torch.zeros(2, device=self.device)
        if self.check_finite:
            flags[0] = (~torch.isfinite(loss.detach())).float()
        if self.stop.received is not None:
            flags[1] = 1.0
        if self.distributed:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if not self.deferred:
            return self._reason(flags, step)
        previous = self._pending
        host = torch.empty(2, pin_memory=self.device.type == "cuda")
        host.copy_(flags, non_blocking=True)
        event = torch.cuda.Event() if self.device.type == "cuda" else None
        if event is not None:
            event.record()
        self._pending = (host, event, step)
        return self._read(previous)

    def settle(self) -> tuple[str, int] | None:
        """The verdict on the last step whose flags are still in flight (one sync; before saves)."""
        pending, self._pending = self._pending, None
        return self._read(pending)

    def stop_agreed(self) -> bool:
        """Whether a stop signal reached this process or any other rank of the job."""
        stopping = self.stop.received is not None
        if not self.distributed:
            return stopping
        flag = torch.tensor([float(stopping)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _read(
        self, pending: tuple[torch.Tensor, torch.cuda.Event | None, int] | None
    ) -> tuple[str, int] | None:
        if pending is None:
            return None
        host, event, step = pending
        if event is not None:
            event.synchronize()
        return self._reason(host, step)

    @staticmethod
    def _reason(flags: torch.Tensor, step: int) -> tuple[str, int] | None:
        nonfinite, stop = flags.tolist()
        if nonfinite:
            return "nonfinite", step
        return ("signal", step) if stop else None
