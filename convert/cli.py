"""Shared CLI plumbing: user mistakes become one `error: ...` line and an exit code, not a trace."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from convert.errors import ConversionError, UsageError
from convert.keymaps import KeyMapError

USAGE, BAD_DATA, INTERRUPTED = 2, 1, 130


def fail(message: object) -> None:
    text = " ".join(str(message).split("\n")).strip()
    print(f"error: {text}", file=sys.stderr)


def run(action: Callable[[], object]) -> int:
    """Runs `action`; maps expected failures to exit codes (2 usage, 1 data or I/O)."""
    try:
        action()
    except BrokenPipeError:  # `... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UsageError as e:
        fail(e)
        return USAGE
    except (ConversionError, KeyMapError, OSError) as e:
        fail(e)
        return BAD_DATA
    except KeyboardInterrupt:
        fail("interrupted")
        return INTERRUPTED
    return 0
