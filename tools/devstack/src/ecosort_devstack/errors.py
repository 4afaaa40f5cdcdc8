"""The one error type of the launcher: its message names the setting, port or file at fault."""


class StackError(Exception):
    """A start-up or shutdown problem the user can act on; printed without a traceback."""
