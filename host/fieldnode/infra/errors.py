"""The one exception type the CLI turns into a clean message (no traceback) and exit status 2."""


class FieldnodeError(Exception):
    """A problem the user can fix: the message names the bad input and what to do about it."""
