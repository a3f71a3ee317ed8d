"""How the program ends when something stops it: the exception types, and their exit statuses.

`exit_status` is the one place an exception becomes an exit status and a line on stderr; every
console script and every worker process asks it.
"""

from __future__ import annotations


class UserError(Exception):
    """A bad config value, missing data or an input the model cannot take: one line, exit 1."""


class ExitRequest(Exception):
    """End the program with `exit_code` after logging the message (if any); no traceback."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(ExitRequest):
    """Training stopped on SIGINT or SIGTERM after saving a resumable checkpoint: 128 + signal."""

    def __init__(self, signal_number: int, checkpoint: str) -> None:
        message = f"stopped by signal {signal_number}; resume with resume={checkpoint}"
        super().__init__(message, 128 + signal_number)


class InterruptedAgain(KeyboardInterrupt):
    """A second Ctrl-C while the first one's checkpoint was being saved: stop at once."""


def first_line(error: BaseException | str, default: str = "") -> str:
    """The first non-empty line of an error's text (or of `error` itself), else `default`."""
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else default


def exit_status(error: BaseException) -> tuple[int, str] | None:
    """The exit status and the line to report for `error`; None for a bug (keep the traceback).

    A UserError or a missing required key is exit 1 with `error: ...`; an ExitRequest is its own
    status with its message (empty when a worker process already said why).
    """
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(error, UserError):
        return 1, f"error: {error}"
    if isinstance(error, MissingMandatoryValue):
        return 1, f"error: {error.full_key} is required; pass {error.full_key}=..."
    if isinstance(error, ExitRequest):
        return error.exit_code, str(error)
    return None
