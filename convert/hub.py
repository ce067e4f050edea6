"""SRC on the command line: a local snapshot or file, or a Hugging Face repo id to fetch."""

from __future__ import annotations

import re
from pathlib import Path

from convert import components
from convert.errors import ConversionError, UsageError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def is_repo_id(src: str) -> bool:
    return bool(_REPO_ID.match(src))


def resolve(src: str | Path) -> Path:
    """A local path as is; else, for `owner/name`, a snapshot of only the files conversion needs."""
    path = Path(src)
    if path.exists():
        return path
    if not is_repo_id(str(src)):
        raise UsageError(f"{src} does not exist (and is not a Hugging Face repo id owner/name)")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo_id=str(src), allow_patterns=components.hub_patterns())
    except Exception as e:  # offline, unknown repo, gated, HTTP errors: all one message
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ConversionError(
            f"{src} is not a local path, and downloading it from the Hugging Face Hub failed "
            f"({type(e).__name__}: {reason})"
        ) from None
    return Path(local)
