"""Streaming conversion of one component: check everything from headers, then tensor by tensor.

`plan` reads only file headers: it maps the checkpoint names through the component's `KeyMap`
(missing and unknown keys are listed), checks each tensor's element count against the model, and
orders the work by storage group (`wanjax.io.checkpoint.group_of`, one DiT block per group) and,
within that, by position on disk. `convert_component` then reads one tensor at a time, casts it
to the target dtype, lays it out our way, checks its exact shape and that it is finite, and hands
each finished group to the `ParamWriter`. Host memory holds one group plus the tensor in flight.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from convert.components import Component
from convert.errors import ConversionError
from convert.keymaps import KeyMap, KeyMapError, LeafMap
from convert.layouts import Snapshot
from convert.readers import TensorSource
from wanjax.io.checkpoint import ParamWriter, group_of

DTYPES = {"bf16": np.dtype(ml_dtypes.bfloat16), "fp32": np.dtype(np.float32)}
_FINITE_CHUNK = 1 << 24  # elements per isfinite pass, so the check allocates 16 MB at most
_EXPONENT_MASKS = {
    "bfloat16": 0x7F80, "float16": 0x7C00, "float32": 0x7F800000, "float64": 0x7FF0000000000000,
}
_TILE = 128  # transpose tile edge: two tiles of 4-byte elements fit in L1/L2


@dataclasses.dataclass(frozen=True)
class Plan:
    """What converting one component will do; built and checked before any tensor is read."""

    component: Component
    location: Path
    config: Any
    source: TensorSource
    keymap: KeyMap
    shapes: dict[str, tuple[int, ...]]
    groups: list[tuple[str, list[LeafMap]]]

    @property
    def source_bytes(self) -> int:
        return sum(self.source.tensors[leaf.torch_key].nbytes for _, g in self.groups for leaf in g)

    @property
    def num_tensors(self) -> int:
        return sum(len(g) for _, g in self.groups)

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes.values())


def plan(component: Component, location: Path, source: TensorSource, snapshot: Snapshot) -> Plan:
    """Checks names and sizes of every tensor against the model; raises ConversionError."""
    family = component.family
    config = family.read_config(location, source, snapshot)
    if family.select is not None:
        source = source.renamed(family.select(source.keys(), snapshot.layout))
    keymap = family.keymap(config, snapshot.layout)
    try:
        keymap.check_keys(source.keys())
    except KeyMapError as e:
        raise ConversionError(f"{component.name} ({snapshot.relative(location)}): {e}") from None
    shapes = family.shapes(config)
    if set(shapes) != set(keymap.by_ours):  # a table bug, not a user mistake
        raise AssertionError(f"{family.name} key table and model disagree")
    for leaf in keymap.leaves:
        info = source.tensors[leaf.torch_key]
        want = int(np.prod(shapes[leaf.ours_key], dtype=np.int64))
        if int(np.prod(info.shape, dtype=np.int64)) != want:
            raise ConversionError(
                f"{component.name}: tensor {leaf.torch_key} in {info.file.name} has shape "
                f"{list(info.shape)}, which does not fit the model (its {leaf.ours_key} has "
                f"shape {list(shapes[leaf.ours_key])})"
            )
    by_group: dict[str, list[LeafMap]] = {}
    for leaf in sorted(keymap.leaves, key=lambda lf: source.position(lf.torch_key)):
        by_group.setdefault(group_of(leaf.ours_key), []).append(leaf)
    return Plan(component, location, config, source, keymap, shapes, list(by_group.items()))


def check_finite(value: np.ndarray, what: str) -> None:
    """Raises if `value` holds NaN or Inf: an all-ones exponent, tested on the raw bits (numpy's
    `isfinite` on bfloat16 is ten times slower than this)."""
    if value.dtype.kind != "f" and value.dtype != DTYPES["bf16"]:
        return
    bits = value.reshape(-1).view(f"u{value.dtype.itemsize}")
    exponent = bits.dtype.type(_EXPONENT_MASKS[value.dtype.name])
    bad = 0
    for start in range(0, bits.size, _FINITE_CHUNK):
        bad += int(np.count_nonzero(bits[start : start + _FINITE_CHUNK] & exponent == exponent))
    if bad:
        raise ConversionError(f"{what} holds {bad} NaN/Inf value(s)")


@functools.cache
def _is_transpose(to_ours: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Whether a table's layout function is a plain 2-D transpose (checked on a probe)."""
    probe = np.arange(6, dtype=np.float32).reshape(2, 3)
    try:
        out = to_ours(probe)
    except Exception:  # a function for another rank
        return False
    return out.shape == (3, 2) and np.array_equal(out, probe.T)


def transpose_2d(a: np.ndarray) -> np.ndarray:
    """`np.ascontiguousarray(a.T)`, several times faster: cache-sized tiles, copied by threads
    (numpy releases the GIL while copying)."""
    rows, cols = a.shape
    if a.size < _TILE * _TILE * 16:
        return np.ascontiguousarray(a.T)
    src = a.view(f"u{a.dtype.itemsize}")  # plain bits: the same copy for any float type
    out = np.empty((cols, rows), src.dtype)

    def band(start: int) -> None:
        for i in range(start, min(start + step, rows), _TILE):
            for j in range(0, cols, _TILE):
                out[j : j + _TILE, i : i + _TILE] = src[i : i + _TILE, j : j + _TILE].T

    workers = min(8, os.cpu_count() or 1)
    step = -(-rows // (workers * _TILE)) * _TILE
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(band, range(0, rows, step)))
    return out.view(a.dtype)


def convert_tensor(plan: Plan, leaf: LeafMap, dtype: np.dtype) -> np.ndarray:
    """Reads one tensor, casts it (round to nearest even), lays it out our way, and checks it."""
    info = plan.source.tensors[leaf.torch_key]
    value = plan.source.read(leaf.torch_key).astype(dtype, copy=False)
    if value.ndim == 2 and _is_transpose(leaf.to_ours):
        value = transpose_2d(value)
    else:
        value = leaf.to_ours(value)
    what = f"{plan.component.name}: tensor {leaf.torch_key} in {info.file.name}"
    if tuple(value.shape) != plan.shapes[leaf.ours_key]:
        raise ConversionError(
            f"{what} has shape {list(info.shape)}, which maps to {list(value.shape)} but the "
            f"model's {leaf.ours_key} has shape {list(plan.shapes[leaf.ours_key])}"
        )
    check_finite(value, what)
    return value


def convert_component(
    plan: Plan,
    writer: ParamWriter,
    dtype: np.dtype,
    on_tensor: Callable[[int], None] = lambda nbytes: None,
) -> dict:
    """Streams `plan` into `writer` group by group; `on_tensor(source bytes)` reports progress."""
    nbytes = 0
    for name, leaves in plan.groups:
        group = {}
        for leaf in leaves:
            group[leaf.ours_key] = value = convert_tensor(plan, leaf, dtype)
            nbytes += value.nbytes
            on_tensor(plan.source.tensors[leaf.torch_key].nbytes)
        writer.write_group(name, group)
        del group, value
    return {"num_params": plan.num_params, "bytes": nbytes, "num_tensors": plan.num_tensors}


def read_flat(plan: Plan, dtype: np.dtype) -> dict[str, np.ndarray]:
    """The whole component in memory (for small models and `load_dit` on a raw snapshot)."""
    return {leaf.ours_key: convert_tensor(plan, leaf, dtype) for _, g in plan.groups for leaf in g}
