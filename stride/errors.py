"""Errors that the command line turns into one clear line and a non-zero exit."""


class UsageError(ValueError):
    """Bad input from the user: a config, a flag, a path. The message says what is allowed."""
