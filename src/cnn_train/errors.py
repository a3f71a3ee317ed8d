"""The one exception type that means "the user can fix this": reported in one line, exit 1."""


class UserError(Exception):
    """A bad config value, missing data or an input the model cannot take."""


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving a resumable checkpoint."""

    def __init__(self, signal_number: int, checkpoint: str) -> None:
        super().__init__(f"stopped by signal {signal_number}; resume with resume={checkpoint}")
        self.exit_code = 128 + signal_number
