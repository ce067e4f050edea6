"""All-or-nothing output directories: write next to DST, rename into place only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from convert.errors import UsageError


@contextlib.contextmanager
def atomic_dir(dst: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty temporary directory next to `dst`; it becomes `dst` if the block succeeds
    and is removed if it raises. An existing `dst` is replaced only with `overwrite`, and only
    after the new one is complete."""
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst} already exists; pass --overwrite to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    try:
        tmp.mkdir()
        yield tmp
        if dst.exists():
            old = dst.parent / f".{dst.name}.old-{os.getpid()}"
            dst.rename(old)
            tmp.rename(dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
