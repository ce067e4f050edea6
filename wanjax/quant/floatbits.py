"""Exact float32 bit-level helpers for the 4-bit formats.

XLA's `exp2`/`log2` are not exact at integers on CPU (e.g. `exp2(-20) != 2**-20`), XLA may
elide an `f32 -> bf16 -> f32` round trip as "excess precision", and its algebraic simplifier
rewrites `a / broadcast(b)` and `a / constant` as multiplications by a reciprocal, which are not
the IEEE quotient. Every
rounding step that the reference performs with those ops is therefore done here with integer
arithmetic on the bits or behind an optimization barrier, so results match on every backend.

All helpers take and return float32/int32 arrays; inputs are finite unless stated otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

_MANTISSA_BITS = 23
_EXPONENT_BIAS = 127


def _bits(x: Float[Array, "*shape"]) -> Array:
    return jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)


def _from_bits(bits: Array) -> Float[Array, "*shape"]:
    return jax.lax.bitcast_convert_type(bits.astype(jnp.uint32), jnp.float32)


def round_mantissa(x: Float[Array, "*shape"], keep_bits: int) -> Float[Array, "*shape"]:
    """Round to `keep_bits` explicit mantissa bits, to nearest, ties to even (NaN passes through).

    A carry out of the mantissa bumps the exponent, as IEEE rounding does.
    """
    drop = _MANTISSA_BITS - keep_bits
    bits = _bits(x)
    half_minus_one = jnp.uint32((1 << (drop - 1)) - 1)
    lsb = (bits >> drop) & jnp.uint32(1)
    rounded = (bits + half_minus_one + lsb) & jnp.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return jnp.where(jnp.isnan(x), x, _from_bits(rounded))


def round_to_bf16(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """`bf16(x)` of the spec: round-to-nearest-even to bfloat16, returned as float32."""
    return round_mantissa(x, 7)


def exponent(x: Float[Array, "*shape"]) -> Int[Array, "*shape"]:
    """`floor(log2(x))` for positive normal float32 `x`, read from the exponent field."""
    return ((_bits(x) >> _MANTISSA_BITS) & jnp.uint32(0xFF)).astype(jnp.int32) - _EXPONENT_BIAS


def pow2(e: Int[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Exactly `2.0 ** e` as float32 for integer `e` in [-126, 127] (the normal range)."""
    biased = (e.astype(jnp.int32) + _EXPONENT_BIAS).astype(jnp.uint32)
    return _from_bits(biased << _MANTISSA_BITS)


def divide(a: Float[Array, "*shape"], b: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """The IEEE float32 quotient `a / b`, with `b` (array or constant, not -0) broadcast to `a`.

    XLA turns a division by a constant or by a broadcast into a multiplication by a reciprocal.
    So the divisor is tied to `a`'s data (`+ min(|a|, 0)`, which is 0, or NaN where `a` is NaN
    and the quotient is NaN anyway); under `vmap` it is then batched like `a`, so no broadcast is
    inserted in front of the division, and the barrier keeps the compiler from seeing through it.
    Not needed when `b` is a power of two (then both forms are exact).
    """
    a = jnp.asarray(a, jnp.float32)
    divisor = jnp.asarray(b, jnp.float32) + jnp.minimum(jnp.abs(a), jnp.float32(0))
    return a / jax.lax.optimization_barrier(divisor)


def _rounds_up_thresholds() -> np.ndarray:
    """T[e + 126]: the least float32 y in [2^e, 2^(e+1)) whose float32 log2 rounds to e + 1.

    A correctly rounded float32 `log2(y)` equals the integer k = e + 1 once log2(y) lies within half
    a float32 spacing of k, so `floor(log2_f32(y))` is e + 1 there, not e. The spacing is that of the
    float32 numbers on the far side of k from zero.
    """
    thresholds = np.full(254, np.inf, np.float64)
    for e in range(-126, 128):
        k = e + 1
        if k == 0:
            continue  # log2(y) < 0 never rounds up to 0: small negatives are exact enough.
        spacing = 2.0 ** (np.floor(np.log2(abs(k))) - _MANTISSA_BITS)
        if k > 0 and k == 2 ** np.floor(np.log2(k)):
            spacing /= 2  # just below a power of two the float32 grid is twice as fine.
        value = 2.0 ** (k - spacing / 2)
        as_f32 = np.float32(value)
        if as_f32 < value:
            as_f32 = np.nextafter(as_f32, np.float32(np.inf))
        thresholds[e + 126] = as_f32
    return thresholds.astype(np.float32)


_ROUNDS_UP = _rounds_up_thresholds()


def floor_log2_f32(y: Float[Array, "*shape"]) -> Int[Array, "*shape"]:
    """`floor(log2(y))` where `log2` is a correctly rounded float32 logarithm (`y` positive normal).

    The reference computes exponents as `torch.floor(torch.log2(y))` in float32; near powers of two
    the float32 logarithm rounds up to the next integer. This reproduces that without `log2`.
    """
    e = exponent(y)
    threshold = jnp.asarray(_ROUNDS_UP)[jnp.clip(e + 126, 0, 253)]
    return e + (y >= threshold).astype(jnp.int32)
