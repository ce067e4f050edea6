"""The two kinds of user mistakes the conversion CLIs report (one line, no stack trace)."""


class UsageError(Exception):
    """Bad arguments (a path that does not exist, an output that would be overwritten): exit 2."""


class ConversionError(Exception):
    """Bad input data (a broken, truncated or mismatched checkpoint): exit 1."""
