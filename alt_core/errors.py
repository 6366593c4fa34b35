"""One base class for the errors a user can fix: the message says what is wrong and how to fix it.

The CLI prints these as one line (exit code 2); any other exception is a bug and keeps its traceback.
"""


class ALTError(Exception):
    """A bad flag, path, file or setting; the message names it and says how to fix it."""


class ConfigError(ALTError):
    """A setting out of range or unknown."""
