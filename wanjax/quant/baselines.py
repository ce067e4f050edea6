"""Baseline 4-bit block formats for ablations: NVFP4-style, MXFP4-style and plain INT4.

NVFP4 and MXFP4 follow the reference simulation library (global-computing-consortium/HiFloat4,
pure-PyTorch path, float32) bit for bit, as pinned by `shared/golden/lowbit_fake_quant.npz`:

- `nvfp4`: 16-value groups; scale `max/6` clipped to 448 and rounded to E4M3 (ties to even,
  subnormal below 2^-6); elements E2M1 (ties to even), clipped to 6. There is no second-level
  per-tensor scale. A group whose scale rounds to zero dequantizes to zeros.
- `mxfp4`: 32-value groups; shared exponent `floor(log2(max + 9.6e-7)) - 2` (the reference's
  rule, not the OCP MX rule: no carry, and the 9.6e-7 floor flushes groups below ~1e-6 to zero);
  elements E2M1 with round-half-away and clipping to 6. Report it as "MXFP4-style (reference
  library rule)", not as OCP MXFP4.
- `int4`: symmetric integer grid {-7..7} per 64-value group, scale `absmax/7` in float32,
  round half to even. Not in the golden file; it is the plain-integer control.

All three share HiF4's conventions: quantized axis anywhere, zero padding, float32 math,
result in the input dtype, and NaN for every value of a group holding a NaN or Inf.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float

from wanjax.quant import floatbits, grouping

NVFP4_GROUP = 16
MXFP4_GROUP = 32
INT4_GROUP = 64

_E4M3_MAX = 448.0
_E4M3_MIN_EXP = -6
_E2M1_MAX = 6.0
_NVFP4_EPS = 2.0**-60  # the reference's guard against log2(0) and division by zero
_MXFP4_EPS = 9.6e-7  # the reference's guard against log2(0); it also sets the flush-to-zero floor


def _nvfp4_groups(v: Float[Array, "... 16"]) -> Float[Array, "... 16"]:
    mag = jnp.abs(v)
    sf = floatbits.divide(jnp.max(mag, axis=-1, keepdims=True), jnp.float32(6))
    sf = jnp.clip(sf, 0, _E4M3_MAX)
    sf_exp = jnp.maximum(floatbits.exponent(sf + jnp.float32(_NVFP4_EPS)), _E4M3_MIN_EXP)
    e4m3 = jnp.round(sf * floatbits.pow2(3 - sf_exp)) * floatbits.pow2(sf_exp - 3)

    igv = floatbits.divide(mag, e4m3 + jnp.float32(_NVFP4_EPS))
    e2 = jnp.maximum(floatbits.exponent(igv + jnp.float32(_NVFP4_EPS)), 0)
    m1 = jnp.round(igv * floatbits.pow2(1 - e2)) * jnp.float32(0.5)
    e2m1 = jnp.minimum(floatbits.pow2(e2) * m1, _E2M1_MAX)
    return jnp.sign(v) * e4m3 * e2m1


def _mxfp4_groups(v: Float[Array, "... 32"]) -> Float[Array, "... 32"]:
    mag = jnp.abs(v)
    group_max = jnp.max(mag, axis=-1, keepdims=True)
    shared_exp = floatbits.floor_log2_f32(group_max + jnp.float32(_MXFP4_EPS)) - 2
    shared_exp = jnp.clip(shared_exp, -126, 125)  # >= -22 in practice because of the eps
    biased = mag / floatbits.pow2(shared_exp)
    private_exp = jnp.clip(floatbits.exponent(biased + jnp.float32(_MXFP4_EPS)), 0, 2)
    mant = jnp.floor(biased / floatbits.pow2(private_exp) * 2 + jnp.float32(0.5))
    e2m1 = jnp.minimum(mant * jnp.float32(0.5) * floatbits.pow2(private_exp), _E2M1_MAX)
    return jnp.sign(v) * floatbits.pow2(shared_exp) * e2m1


def _int4_groups(v: Float[Array, "... 64"]) -> Float[Array, "... 64"]:
    scale = floatbits.divide(jnp.max(jnp.abs(v), axis=-1, keepdims=True), jnp.float32(7))
    safe = jnp.where(scale > 0, scale, jnp.float32(1))
    q = jnp.clip(jnp.round(floatbits.divide(v, safe)), -7, 7)
    return q * scale


def _blockwise(
    quantize_groups: Callable[[Array], Array], group_size: int
) -> Callable[..., Float[Array, "*shape"]]:
    def fake_quant(x: Float[Array, "*shape"], axis: int = -1) -> Float[Array, "*shape"]:
        grouping.check_floating(x)
        groups = grouping.to_groups(x.astype(jnp.float32), axis, group_size)
        out = quantize_groups(groups)
        out = grouping.poison_nonfinite_groups(out, jnp.max(jnp.abs(groups), axis=-1))
        return grouping.from_groups(out, x.shape, axis).astype(x.dtype)

    fake_quant.__doc__ = f"Quantize-dequantize along `axis` in {group_size}-value groups."
    return fake_quant


fake_quant_nvfp4 = _blockwise(_nvfp4_groups, NVFP4_GROUP)
fake_quant_mxfp4 = _blockwise(_mxfp4_groups, MXFP4_GROUP)
fake_quant_int4 = _blockwise(_int4_groups, INT4_GROUP)
