"""When training must stop early: a signal (SIGINT/SIGTERM) or a non-finite loss."""

from __future__ import annotations

import signal
from types import FrameType, TracebackType

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step.

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


class StepGuard:
    """Checks after every step whether to stop; all ranks of a data-parallel job agree.

    On a GPU the check reads the flags of the previous step, copied to the host without
    blocking, so the loop never waits for the device; it still stops within one step.
    """

    def __init__(self, device: torch.device, stop: StopSignal, *, check_finite: bool) -> None:
        self.device = device
        self.stop = stop
        self.check_finite = check_finite
        self.distributed = dist.is_available() and dist.is_initialized()
        self._pending: tuple[torch.Tensor, torch.cuda.Event] | None = None

    def after_step(self, loss: torch.Tensor) -> str | None:
        """`"signal"`, `"nonfinite"` or None, for the latest step (or the one before, on a GPU)."""
        if not self.distributed and self.device.type == "cpu":
            if self.stop.received is not None:
                return "signal"
            return "nonfinite" if self.check_finite and not torch.isfinite(loss) else None
        flags = torch.zeros(2, device=self.device)
        if self.check_finite:
            flags[0] = (~torch.isfinite(loss.detach())).float()
        if self.stop.received is not None:
            flags[1] = 1.0
        if self.distributed:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if self.device.type != "cuda":
            return self._reason(flags)
        previous = self._pending
        host = torch.empty(2, pin_memory=True)
        host.copy_(flags, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (host, event)
        if previous is None:
            return None
        previous[1].synchronize()
        return self._reason(previous[0])

    @staticmethod
    def _reason(flags: torch.Tensor) -> str | None:
        nonfinite, stop = flags.tolist()
        if nonfinite:
            return "nonfinite"
        return "signal" if stop else None
