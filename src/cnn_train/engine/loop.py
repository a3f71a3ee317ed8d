"""The hot path: one training epoch, and when it must stop (a signal, a non-finite loss, a
checkpoint due mid-epoch, or the run's last step).

`train_one_epoch` trains and reports why it stopped; it neither saves nor raises. `fit` in
`engine/trainer.py` decides what each reason means.
"""

from __future__ import annotations

import enum
import itertools
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType, TracebackType

import torch
import torch.distributed as dist
from tqdm import tqdm

from cnn_train.distributed import is_distributed
from cnn_train.engine.state import Progress, RunParts
from cnn_train.errors import Interrupted, InterruptedAgain
from cnn_train.tracking import progress_bar

# SIGUSR2: SLURM's warning before a time limit or a preemption (as submitit asks for it). The
# handler it displaces (submitit's, which requeues the job) gets it once the checkpoint is saved.
HANDED_ON = (signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ()
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *HANDED_ON)
# Device types whose flags are read one step late, so that the loop never waits for the device.
DEFERRED_DEVICE_TYPES = frozenset({"cuda"})


class Reason(enum.Enum):
    """Why the loop handed control back before the epoch's end, most urgent first."""

    NONFINITE = "a non-finite loss"  # end the run without saving
    SIGNAL = "a stop signal"  # save, then end the run
    SAVE_DUE = "a mid-epoch checkpoint is due"  # save, then call the loop again
    BUDGET = "the run's steps are all taken"  # save, validate the cut epoch, end the run


@dataclass(frozen=True)
class Stop:
    """A reason to stop, and the optimizer step it concerns."""

    reason: Reason
    step: int


class StopSignal:
    """Turns the first SIGINT/SIGTERM/SIGUSR2 into a request to stop after the current step.

    A second SIGINT interrupts at once, as Ctrl-C twice does elsewhere. On leaving after the run
    was interrupted, SLURM's SIGUSR2 is handed to the handler it displaced (submitit requeues).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.received == signal.SIGINT and signal_number == signal.SIGINT:
            raise InterruptedAgain
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
        self.distributed = is_distributed()
        self.deferred = device.type in DEFERRED_DEVICE_TYPES
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None, int] | None = None

    def after_step(self, loss: torch.Tensor, step: int) -> Stop | None:
        """A stop for this step (or, deferred, the one before), or None."""
        if not self.distributed and not self.deferred:
            nonfinite = self.check_finite and not torch.isfinite(loss)
            return self._verdict(nonfinite, self.stop.received is not None, step)
        flags = torch.zeros(2, device=self.device)
        if self.check_finite:
            flags[0] = (~torch.isfinite(loss.detach())).float()
        if self.stop.received is not None:
            flags[1] = 1.0
        if self.distributed:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if not self.deferred:
            return self._verdict(*flags.tolist(), step)
        previous = self._pending
        host = torch.empty(2, pin_memory=self.device.type == "cuda")
        host.copy_(flags, non_blocking=True)
        event = torch.cuda.Event() if self.device.type == "cuda" else None
        if event is not None:
            event.record()
        self._pending = (host, event, step)
        return self._read(previous)

    def settle(self, returned: Stop | None) -> Stop | None:
        """The stop that stands once the last step's flags in flight are read (one sync; call it
        before anything is saved): a non-finite loss first, then a signal, then `returned`."""
        pending, self._pending = self._pending, None
        settled = self._read(pending)
        verdicts = [verdict for verdict in (settled, returned) if verdict is not None]
        for reason in Reason:
            for verdict in verdicts:
                if verdict.reason is reason:
                    return verdict
        return None

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
    ) -> Stop | None:
        if pending is None:
            return None
        host, event, step = pending
        if event is not None:
            event.synchronize()
        return self._verdict(*host.tolist(), step)

    @staticmethod
    def _verdict(nonfinite: float | bool, stop: float | bool, step: int) -> Stop | None:
        if nonfinite:
            return Stop(Reason.NONFINITE, step)
        return Stop(Reason.SIGNAL, step) if stop else None


@dataclass
class EpochPass:
    """One epoch's batches as this process reads them, and its timing (not part of progress)."""

    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    bar: tqdm
    start_lr: float  # the LR of the epoch's first step
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    trained: int = 0  # batches trained in this process (fewer than the epoch's after a resume)

    def finish(self) -> None:
        """The training part of the epoch is over: stop its clock and close its bar."""
        self.bar.close()
        self.ended = self.ended or time.perf_counter()

    @property
    def seconds(self) -> float:
        """How long the epoch trained (until `finish`)."""
        return (self.ended or time.perf_counter()) - self.started


def epoch_pass(parts: RunParts, progress: Progress) -> EpochPass:
    """Start (or, after a resume, continue) the epoch in hand: its batches from the next one."""
    progress.begin_epoch(parts.new_sums())
    parts.train_loader.set_epoch(progress.epoch)
    parts.train_model.train()
    skip = progress.batch_in_epoch
    batches = itertools.islice(parts.train_loader, skip, parts.steps_per_epoch)
    desc = f"epoch {progress.epoch + 1}/{parts.cfg.trainer.epochs}"
    bar = progress_bar(batches, total=parts.steps_per_epoch - skip, desc=desc)
    return EpochPass(iter(bar), bar, current_lr(parts.optimizer))


StepReport = Callable[[int, torch.Tensor, float], None]


def train_one_epoch(
    parts: RunParts,
    progress: Progress,
    epoch: EpochPass,
    guard: StepGuard,
    report: StepReport | None = None,
) -> Stop | None:
    """Train the epoch's remaining batches; return why it stopped early, or None at its end.
    `report(step, loss, lr)` after every step."""
    trainer = parts.cfg.trainer
    if spent := budget_spent(parts, progress):  # resumed with a budget it already used up
        return spent
    for images, targets in epoch.batches:
        lr = current_lr(parts.optimizer)  # the LR this step uses: the schedule moves after it
        logits, loss, stepped = parts.stepper.train_batch(images, targets)
        progress.sums.update(logits, targets.to(logits.device, non_blocking=True), loss)
        progress.batch_in_epoch += 1
        epoch.trained += 1
        if not stepped:
            continue
        progress.step += 1
        verdict = guard.after_step(loss, progress.step)
        if verdict is not None:
            return verdict
        if report is not None:
            report(progress.step, loss, lr)
        if progress.step % trainer.log_every_steps == 0:
            running = progress.sums.read()
            epoch.bar.set_postfix(loss=f"{running['loss']:.4f}", acc1=f"{running['acc1']:.3f}")
        if progress.step >= parts.total_steps:
            return budget_spent(parts, progress)
        every = trainer.checkpoint_every_steps
        if every and progress.step % every == 0 and progress.batch_in_epoch < parts.steps_per_epoch:
            return Stop(Reason.SAVE_DUE, progress.step)
    return None


def budget_spent(parts: RunParts, progress: Progress) -> Stop | None:
    """A stop when the run's optimizer steps are all taken before the epoch's last batch; None
    at the epoch's end, which is then an epoch like any other."""
    if progress.step >= parts.total_steps and progress.batch_in_epoch < parts.steps_per_epoch:
        return Stop(Reason.BUDGET, progress.step)
    return None


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])
