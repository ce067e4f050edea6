"""HiF4 (HiFloat4) quantize-dequantize, bit-exact to the reference semantics.

Spec: `shared/docs/hif4_format.md`. A group of 64 values, viewed as [8][2][4], shares an E6M2
scale S, one E1 bit `a_j` per 8 values and one E1 bit `b_k` per 4 values; each value keeps a sign
and a 3-bit magnitude q (value q/4). value = sign * (q/4) * 2^a_j * 2^b_k * S.

The float32 operation order is the reference's: it decides which way ties and near-ties round.
Every intermediate rounding is done on the bits (`floatbits`), never with `exp2`/`log2`/dtype
round trips, so results do not depend on the backend.

Non-finite inputs: a group holding a NaN or an Inf has an undefined scale, so every value of it
dequantizes to NaN (activations propagate NaN; `packing.pack` refuses such weights when it can
see the values, and otherwise stores the E6M2 NaN code 0xFF for the group).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, UInt8

from wanjax.quant import floatbits, grouping

GROUP_SIZE = 64
SUB8, SUB4 = 8, 4  # values per level-2 and per level-3 exponent bit
SCALE_MIN = 2.0**-48  # smallest E6M2 value, code 0
SCALE_MAX = 49152.0  # 1.5 * 2^15, the largest finite E6M2 value (1.75 * 2^15 is NaN)
MAX_Q = 7  # 3-bit magnitude: 7/4 = 1.75


def _bf16_one_seventh() -> float:
    """bf16(1/7) = 0.142578125: 1/7 in float32, rounded to nearest-even bfloat16."""
    bits = int(np.asarray(1 / 7, np.float32).view(np.uint32))
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return float(np.asarray(bits, np.uint32).view(np.float32))


ONE_SEVENTH_BF16 = _bf16_one_seventh()


class HiF4Groups(NamedTuple):
    """The fields of HiF4 groups; a pytree.

    Layout `[..., n_groups, 64]` (the packing layout), or with `trailing=True` in the functions
    below, `[..., n_groups, 64, P]`: the group's elements on axis -2 and P independent columns
    last (a weight grouped along a non-last axis, without transposing it). The per-8 and per-4
    bits and the scale follow the same layout (`[..., 8]`, `[..., 16]`, `[...]` plus `P`).
    `scale` is the E6M2 value as float32 (NaN for a group with non-finite input).
    """

    negative: Bool[Array, "*elements"]
    q: UInt8[Array, "*elements"]
    sub8: Bool[Array, "*sub8"]
    sub4: Bool[Array, "*sub4"]
    scale: Float[Array, "*groups"]


def _unsqueeze(a: Array, count: int, tail: int) -> Array:
    """Insert `count` unit axes in front of the last `tail` axes (broadcast a coarser level)."""
    for _ in range(count):
        a = jnp.expand_dims(a, a.ndim - tail)
    return a


def _as_blocks(v: Array, tail: int) -> Array:
    """`[..., 64, *tail]` viewed as `[..., 8, 2, 4, *tail]`."""
    lead, rest = v.shape[: v.ndim - 1 - tail], v.shape[v.ndim - tail :]
    return v.reshape(*lead, GROUP_SIZE // SUB8, SUB8 // SUB4, SUB4, *rest)


def _merge_pairs(v: Array, tail: int) -> Array:
    """`[..., 8, 2, *tail]` to `[..., 16, *tail]` (the per-4 bits in element order)."""
    lead, rest = v.shape[: v.ndim - 2 - tail], v.shape[v.ndim - tail :]
    return v.reshape(*lead, -1, *rest)


def _split_pairs(v: Array, tail: int) -> Array:
    """Inverse of `_merge_pairs`."""
    lead, rest = v.shape[: v.ndim - 1 - tail], v.shape[v.ndim - tail :]
    return v.reshape(*lead, -1, SUB8 // SUB4, *rest)


def round_to_e6m2(s: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Round a value in [2^-48, 49152] to E6M2: 3 significant bits, ties to even."""
    return floatbits.round_mantissa(s, 2)


def quantize_groups(groups: Float[Array, "*elements"], trailing: bool = False) -> HiF4Groups:
    """Encode float32 groups of 64 into HiF4 fields (spec steps 1-6)."""
    tail = int(trailing)
    mag = _as_blocks(jnp.abs(groups), tail)  # [..., 8, 2, 4, *p]
    max4 = jnp.max(mag, axis=-1 - tail)  # [..., 8, 2, *p]
    max8 = jnp.max(max4, axis=-1 - tail)  # [..., 8, *p]
    max64 = jnp.max(max8, axis=-1 - tail)  # [..., *p]
    finite = max64 <= jnp.finfo(jnp.float32).max

    s0 = floatbits.round_to_bf16(max64 * jnp.float32(ONE_SEVENTH_BF16))
    scale = round_to_e6m2(jnp.clip(s0, SCALE_MIN, SCALE_MAX))
    rec = floatbits.round_to_bf16(floatbits.divide(jnp.ones_like(scale), scale))

    sub8 = max8 * _unsqueeze(rec, 1, tail) >= 4
    pow_a = jnp.where(sub8, jnp.float32(2), jnp.float32(1))
    sub4 = (max4 * _unsqueeze(rec, 2, tail)) / _unsqueeze(pow_a, 1, tail) >= 2
    pow_b = jnp.where(sub4, jnp.float32(2), jnp.float32(1))

    t = mag / _unsqueeze(pow_a, 2, tail) / _unsqueeze(pow_b, 1, tail) * _unsqueeze(rec, 3, tail)
    q = jnp.minimum(jnp.floor(t * 4 + jnp.float32(0.5)), MAX_Q)
    q = jnp.where(_unsqueeze(finite, 3, tail), q, 0).astype(jnp.uint8)

    return HiF4Groups(
        negative=groups < 0,
        q=q.reshape(groups.shape),
        sub8=sub8,
        sub4=_merge_pairs(sub4, tail),
        scale=jnp.where(finite, scale, jnp.nan),
    )


def dequantize_groups(fields: HiF4Groups, trailing: bool = False) -> Float[Array, "*elements"]:
    """`sign * (q/4) * 2^a * 2^b * S` in float32, in that order (spec step 7)."""
    tail = int(trailing)
    q = _as_blocks(fields.q.astype(jnp.float32), tail)
    pow_a = jnp.where(fields.sub8, jnp.float32(2), jnp.float32(1))
    pow_b = jnp.where(_split_pairs(fields.sub4, tail), jnp.float32(2), jnp.float32(1))
    value = q * jnp.float32(0.25) * _unsqueeze(pow_a, 2, tail) * _unsqueeze(pow_b, 1, tail)
    value = (value * _unsqueeze(fields.scale, 3, tail)).reshape(fields.q.shape)
    return jnp.where(fields.negative, -value, value)


def fake_quant_hif4(x: Float[Array, "*shape"], axis: int = -1) -> Float[Array, "*shape"]:
    """HiF4 quantize-dequantize along `axis`; returns `x.dtype` (HiF4 values are exact in bf16).

    The axis is zero-padded to a multiple of 64, quantized in float32, and cut back. A non-last
    axis is grouped in place (`[pre, n_groups, 64, post]`), without a transpose.
    """
    grouping.check_floating(x)
    x32 = x.astype(jnp.float32)
    if grouping.normalize_axis(axis, x.ndim) == x.ndim - 1:
        groups = grouping.to_groups(x32, axis, GROUP_SIZE)
        out = dequantize_groups(quantize_groups(groups))
        return grouping.from_groups(out, x.shape, axis).astype(x.dtype)
    groups = grouping.split_groups(x32, axis, GROUP_SIZE)
    out = dequantize_groups(quantize_groups(groups, trailing=True), trailing=True)
    return grouping.merge_groups(out, x.shape, axis).astype(x.dtype)
