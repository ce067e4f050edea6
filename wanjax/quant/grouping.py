"""Blocking an array into fixed-size groups along one axis, and back.

Every block format here quantizes consecutive values along one axis. The axis is moved last,
zero-padded to a multiple of the group size (padding never changes the real groups: an all-zero
group quantizes to zeros), and split into `[..., n_groups, group_size]`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float


def normalize_axis(axis: int, ndim: int) -> int:
    """A non-negative axis index; raises ValueError naming the shape if out of range."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimensions")
    return axis % ndim


def num_groups(length: int, group_size: int) -> int:
    return math.ceil(length / group_size)


def to_groups(
    x: Float[Array, "*shape"], axis: int, group_size: int
) -> Float[Array, "... n_groups group"]:
    """Move `axis` last, zero-pad it to a multiple of `group_size`, and split it into groups."""
    axis = normalize_axis(axis, x.ndim)
    moved = jnp.moveaxis(x, axis, -1)
    length = moved.shape[-1]
    pad = num_groups(length, group_size) * group_size - length
    if pad:
        moved = jnp.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)])
    return moved.reshape(*moved.shape[:-1], -1, group_size)


def split_groups(
    x: Float[Array, "*shape"], axis: int, group_size: int
) -> Float[Array, "pre n_groups group post"]:
    """Zero-pad `axis` and split it into groups in place: `[pre, n_groups, group, post]`.

    The dimensions before and after `axis` are flattened into `pre` and `post`. Nothing is
    transposed, which on CPU is several times faster than `to_groups` for a non-last axis.
    """
    axis = normalize_axis(axis, x.ndim)
    pre, length, post = math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1 :])
    flat = x.reshape(pre, length, post)
    pad = num_groups(length, group_size) * group_size - length
    if pad:
        flat = jnp.pad(flat, [(0, 0), (0, pad), (0, 0)])
    return flat.reshape(pre, -1, group_size, post)


def merge_groups(
    groups: Float[Array, "pre n_groups group post"], shape: tuple[int, ...], axis: int
) -> Float[Array, "*shape"]:
    """Inverse of `split_groups`."""
    axis = normalize_axis(axis, len(shape))
    pre, _, _, post = groups.shape
    return groups.reshape(pre, -1, post)[:, : shape[axis], :].reshape(shape)


def from_groups(
    groups: Float[Array, "... n_groups group"], shape: tuple[int, ...], axis: int
) -> Float[Array, "*shape"]:
    """Inverse of `to_groups`: merge groups, cut the padding, and move the axis back."""
    axis = normalize_axis(axis, len(shape))
    flat = groups.reshape(*groups.shape[:-2], -1)[..., : shape[axis]]
    return jnp.moveaxis(flat, -1, axis)


def check_floating(x: Array, what: str = "input") -> None:
    """ValueError unless `x` has a floating dtype (the formats quantize real numbers)."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{what} must be a floating array, got dtype {x.dtype} (shape {x.shape})")


def poison_nonfinite_groups(
    out: Float[Array, "... n_groups group"], group_absmax: Float[Array, "... n_groups"]
) -> Float[Array, "... n_groups group"]:
    """NaN for every value of a group whose input held a NaN or an Inf.

    The group scale of such a group is undefined, so no value of it is meaningful; the NaN then
    propagates through the matmul that consumes it instead of hiding as a large finite number.
    `group_absmax` is the group's max |x| (NaN if any NaN, as XLA's max propagates NaN).
    """
    finite = group_absmax <= jnp.finfo(jnp.float32).max
    return jnp.where(finite[..., None], out, jnp.nan)
