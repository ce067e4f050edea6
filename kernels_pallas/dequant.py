"""Dequantizing a plane of a tiled HiF4 word tile with integer arithmetic only.

value = sign * q * 2^(a + b) * S / 4 with S = (1 + m/4) * 2^e. The float32 bits of the factor
`S * 2^(a+b) / 4` are built directly: for the E6M2 byte c = (e + 48) << 2 | m, `c << 21` puts
e + 48 in the exponent field and m in the top two mantissa bits, so

    bits(S * 2^(a+b) / 4) = (c << 21) + (127 - 48 - 2 + a + b) << 23,

always a normal float32 (the exponent field stays in [77, 142]). Then `f32(q) * factor` is exact
(3 x 3 significant bits) and the sign is OR-ed into bit 31. No exp2, division or rounding is
involved, so the result equals `wanjax.quant.unpack` bit for bit on every backend, and it is exact
in bfloat16. The same function runs inside the Pallas kernels (on `[64, bn]` tiles) and in the
pure-jnp reference (broadcast over all planes at once).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, UInt32

from kernels_pallas.layout import GROUP

FACTOR_EXPONENT = (127 - 48 - 2) << 23  # float32 bias, less the E6M2 bias, less the 2 of q/4
E6M2_FIELD = 0xFF << 21  # the E6M2 byte after `>> 3` (bits 24..31 moved to 21..28)
TOP_EXPONENT_BIT = 1 << 23  # where a per-8 / per-4 bit lands after its shift


def plane_values(
    words: UInt32[Array, "*lead 64 n"],
    scale_row: UInt32[Array, "*lead 1 n"],
    plane: int | UInt32[Array, "*lead 1 1"],
    dtype: jnp.dtype,
) -> Float[Array, "*lead 64 n"]:
    """The 64 dequantized rows of group `plane` of each 512-row chunk of word tile `words`.

    `scale_row` is that group's scale word per column. Row r uses per-8 bit r >> 3, which sits at
    bit 23 - (r >> 3) of the scale word, and per-4 bit r >> 2, at bit 15 - (r >> 2): shifting the
    word left by r >> 3 (or 8 + (r >> 2)) brings the bit to 23, the exponent's lowest bit.
    """
    row = jax.lax.broadcasted_iota(jnp.int32, (GROUP, 1), 0).astype(jnp.uint32)
    shift = jnp.asarray(plane, jnp.uint32) * jnp.uint32(4)
    code = (words >> shift) & jnp.uint32(0xF)

    per8 = (scale_row << (row >> 3)) & jnp.uint32(TOP_EXPONENT_BIT)
    per4 = (scale_row << ((row >> 2) + 8)) & jnp.uint32(TOP_EXPONENT_BIT)
    base = ((scale_row >> 3) & jnp.uint32(E6M2_FIELD)) + jnp.uint32(FACTOR_EXPONENT)
    factor = jax.lax.bitcast_convert_type(base + per8 + per4, jnp.float32)

    q = (code & jnp.uint32(7)).astype(jnp.int32).astype(jnp.float32)
    magnitude = jax.lax.bitcast_convert_type(q * factor, jnp.uint32)
    signed = magnitude | ((code & jnp.uint32(8)) << 28)
    return jax.lax.bitcast_convert_type(signed, jnp.float32).astype(dtype)


def dot_precision(dtype) -> jax.lax.Precision | None:
    """Precision of the products that consume dequantized tiles: float32 activations multiply at
    full precision (the fake-quant product, not a bf16/TF32 pass); bf16 products are exact."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None
