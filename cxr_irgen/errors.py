"""The one exception type for user mistakes: the CLI prints its message as a single line."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad value, wrong checkpoint); message is one actionable line."""
