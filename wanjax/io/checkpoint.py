"""The on-disk model format: a folder with `wanjax.json` and one orbax checkpoint per component.

    DST/wanjax.json    format version, dtype, per-component config, provenance
    DST/dit_high/      orbax checkpoint of the high-noise expert's params (nested dict of arrays)
    DST/dit_low/       the low-noise expert (A14B); a single-model checkpoint has `dit` instead

Everything that loads models (`load_dit`, sampling, training) goes through here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from wanjax.config import DiTConfig

FORMAT = "wanjax"
VERSION = 1
MANIFEST = "wanjax.json"


def nest(flat: Mapping[str, Any]) -> dict:
    """`{'a.b': x}` -> `{'a': {'b': x}}`."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Inverse of `nest`."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def dit_config_to_json(cfg: DiTConfig) -> dict:
    return dataclasses.asdict(cfg)


def dit_config_from_json(d: Mapping[str, Any]) -> DiTConfig:
    fields = {f.name for f in dataclasses.fields(DiTConfig)}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
    return DiTConfig(**kwargs)


def read_manifest(path: str | Path) -> dict:
    """Reads and validates `wanjax.json`; raises FileNotFoundError/ValueError with a clear message."""
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{path} is not a wanjax checkpoint (no {MANIFEST}); convert a Hugging Face snapshot "
            f"first with `python -m convert.wan SRC {path}`"
        )
    meta = json.loads(manifest.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{manifest}: unsupported format {meta.get('format')!r} v{meta.get('version')}")
    return meta


def save_params(path: str | Path, flat: Mapping[str, np.ndarray | jax.Array]) -> None:
    """Writes one component's params (flat `path -> array`) as an orbax checkpoint at `path`."""
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(Path(path).absolute(), nest(dict(flat)))


def load_params(path: str | Path, abstract_flat: Mapping[str, jax.ShapeDtypeStruct]) -> dict:
    """Restores a component to the shapes, dtypes and shardings of `abstract_flat`."""
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(Path(path).absolute(), nest(dict(abstract_flat)))
    return flatten(tree)


def write_manifest(path: str | Path, meta: Mapping[str, Any]) -> None:
    body = {"format": FORMAT, "version": VERSION, **meta}
    (Path(path) / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=True))
