"""The one base class for bad user input: the CLI prints its message as one line and exits 2."""


class UserError(ValueError):
    """Bad input from a user (a value, a file, a data set); the message names it."""
