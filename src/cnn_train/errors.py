"""The one exception type that means "the user can fix this": reported in one line, exit 1."""


class UserError(Exception):
    """A bad config value, missing data or an input the model cannot take."""


class ExitRequest(Exception):
    """End the program with `exit_code` after logging the message (if any); no traceback."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(ExitRequest):
    """Training stopped on SIGINT or SIGTERM after saving a resumable checkpoint."""

    def __init__(self, signal_number: int, checkpoint: str) -> None:
        message = f"stopped by signal {signal_number}; resume with resume={checkpoint}"
        super().__init__(message, 128 + signal_number)
