"""The one exception type that means "the user can fix this": reported in one line, exit 1."""


class UserError(Exception):
    """A bad config value, missing data or an input the model cannot take."""
