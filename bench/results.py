"""Machine-readable bench results: every bench's `--json PATH` writes one object with the same
envelope, which `bench.run_all` reads to build its summary table.

    {"bench": "bench.sample", "environment": {...}, "args": {...}, "rows": [...], ...}

`rows` are the rows the bench printed (one dict per table row, raw numbers, not formatted);
`environment` says where it ran (host, CPU count, jax version, backend, device kind).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    """The common `--json PATH` option (also write the results to PATH; the table still prints)."""
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the results (rows + environment) to this JSON file")


def environment() -> dict:
    """Host and JAX facts: host platform string, CPU count, jax version, backend, device kind."""
    import jax

    device = jax.devices()[0]
    return {
        "host": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": device.device_kind,
        "device_count": jax.device_count(),
        "accelerator": jax.default_backend() in ("gpu", "tpu"),
    }


def _plain(value):
    """JSON-safe copy of argparse values (tuples to lists, paths and others to strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_json(path: str | os.PathLike, bench: str, rows: list[dict], args=None,
               **extra) -> dict:
    """Writes `{"bench", "environment", "args", "rows", **extra}` to `path`; returns it."""
    result = {
        "bench": bench,
        "environment": environment(),
        "args": _plain(vars(args)) if args is not None else {},
        "rows": _plain(rows),
        **_plain(extra),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
    return result


def names_filter(names, wanted) -> list:
    """The `names` containing any of the `wanted` substrings (all of them when `wanted` is empty);
    raises ValueError when one matches nothing (so a typo is an error, not an empty table)."""
    names = list(names)
    if not wanted:
        return names
    missing = [w for w in wanted if not any(w in n for n in names)]
    if missing:
        raise ValueError(f"--config {', '.join(missing)} matches none of: {'; '.join(names)}")
    return [n for n in names if any(w in n for w in wanted)]
