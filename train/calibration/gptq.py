"""GPTQ on the 4-bit block grids (HiF4, NVFP4-, MXFP4-style, INT4), group-aware.

The kernel is `[in, out]`; every format groups it along `in` (K), so GPTQ walks the K rows in
order and pushes each row's rounding error onto the rows not yet quantized, weighted by the
inverse Hessian `H = X^T X` of the layer's inputs (Frantar et al. 2022, with the Cholesky form).

Group awareness: a format's group parameters depend on the group's values (HiF4: the E6M2 scale
from the group max and the per-8 / per-4 exponent bits from the sub-block maxima; NVFP4: the
E4M3 scale; MXFP4: the shared exponent; INT4: absmax/7). They are fixed when the walk reaches a
group's first row, from the *error-updated* values of the whole group, and the group's rows are
then rounded on that fixed grid (`q <= 7` etc. clamps anything the updates pushed past the
top). Every output value is therefore a valid encoding of the format: for HiF4 the layer can be
packed exactly (`wanjax.quant.exact_pack.pack_exact`) and must not be re-quantized
(`QuantConfig(weights_quantized=True)`).

With `H = I` nothing is fed back and the result equals round-to-nearest `fake_quant(W, fmt, 0)`
bit for bit (tests/calibrate), which pins each grid to the format's own rounding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wanjax.quant import baselines, floatbits, formats, hif4

BLOCK = 64


# ----------------------------------------------------------------------------------------------
# Grids: `params(group [g, N]) -> p`, `round_row(w [N], p, i) -> value [N]` (i: row in group)


def _hif4_params(group):
    fields = hif4.quantize_groups(group.T[:, None, :])  # [N, 1, 64]
    pow_a = jnp.where(fields.sub8[:, 0], 2.0, 1.0)  # [N, 8]
    pow_b = jnp.where(fields.sub4[:, 0], 2.0, 1.0)  # [N, 16]
    scale = fields.scale[:, 0]
    rec = floatbits.round_to_bf16(floatbits.divide(jnp.ones_like(scale), scale))
    return pow_a, pow_b, scale, rec


def _hif4_round(w, p, i):
    pow_a, pow_b, scale, rec = p
    pa, pb = pow_a[:, i // 8], pow_b[:, i // 4]
    t = jnp.abs(w) / pa / pb * rec
    q = jnp.minimum(jnp.floor(t * 4 + jnp.float32(0.5)), hif4.MAX_Q)
    value = q * jnp.float32(0.25) * pa * pb * scale
    return jnp.where(w < 0, -value, value)


def _int4_params(group):
    return (floatbits.divide(jnp.max(jnp.abs(group), axis=0), jnp.float32(7)),)


def _int4_round(w, p, i):
    (scale,) = p
    safe = jnp.where(scale > 0, scale, jnp.float32(1))
    return jnp.clip(jnp.round(floatbits.divide(w, safe)), -7, 7) * scale


def _nvfp4_params(group):
    sf = floatbits.divide(jnp.max(jnp.abs(group), axis=0), jnp.float32(6))
    sf = jnp.clip(sf, 0, baselines._E4M3_MAX)
    sf_exp = jnp.maximum(floatbits.exponent(sf + jnp.float32(baselines._NVFP4_EPS)),
                         baselines._E4M3_MIN_EXP)
    return (jnp.round(sf * floatbits.pow2(3 - sf_exp)) * floatbits.pow2(sf_exp - 3),)


def _nvfp4_round(w, p, i):
    (e4m3,) = p
    eps = jnp.float32(baselines._NVFP4_EPS)
    igv = floatbits.divide(jnp.abs(w), e4m3 + eps)
    e2 = jnp.maximum(floatbits.exponent(igv + eps), 0)
    m1 = jnp.round(igv * floatbits.pow2(1 - e2)) * jnp.float32(0.5)
    e2m1 = jnp.minimum(floatbits.pow2(e2) * m1, baselines._E2M1_MAX)
    return jnp.sign(w) * e4m3 * e2m1


def _mxfp4_params(group):
    gmax = jnp.max(jnp.abs(group), axis=0)
    se = floatbits.floor_log2_f32(gmax + jnp.float32(baselines._MXFP4_EPS)) - 2
    return (jnp.clip(se, -126, 125),)


def _mxfp4_round(w, p, i):
    (se,) = p
    eps = jnp.float32(baselines._MXFP4_EPS)
    biased = jnp.abs(w) / floatbits.pow2(se)
    pe = jnp.clip(floatbits.exponent(biased + eps), 0, 2)
    mant = jnp.floor(biased / floatbits.pow2(pe) * 2 + jnp.float32(0.5))
    e2m1 = jnp.minimum(mant * jnp.float32(0.5) * floatbits.pow2(pe), baselines._E2M1_MAX)
    return jnp.sign(w) * floatbits.pow2(se) * e2m1


GRIDS = {
    "hif4": (_hif4_params, _hif4_round),
    "int4": (_int4_params, _int4_round),
    "nvfp4": (_nvfp4_params, _nvfp4_round),
    "mxfp4": (_mxfp4_params, _mxfp4_round),
}


# ----------------------------------------------------------------------------------------------
# GPTQ


@functools.partial(jax.jit, static_argnames=("fmt",))
def _quant_block(w1, u1, fmt: str):
    """Quantize one block of rows `[B, N]` with its inverse-Hessian factor `u1 [B, B]`."""
    params_fn, round_fn = GRIDS[fmt]
    g = formats.get_format(fmt).group_size
    rows = w1.shape[0]
    idx = jnp.arange(rows)
    q1 = jnp.zeros_like(w1)
    e1 = jnp.zeros_like(w1)
    for start in range(0, rows, g):
        params = params_fn(jax.lax.dynamic_slice_in_dim(w1, start, g, axis=0))

        def body(r, carry, start=start, params=params):
            w1, q1, e1 = carry
            w = w1[r]
            q = round_fn(w, params, r - start)
            err = (w - q) / u1[r, r]
            later = (idx > r)[:, None]
            w1 = w1 - jnp.where(later, u1[r][:, None] * err[None, :], 0.0)
            return w1, q1.at[r].set(q), e1.at[r].set(err)

        w1, q1, e1 = jax.lax.fori_loop(start, start + g, body, (w1, q1, e1))
    return q1, e1


def inverse_hessian_factor(xtx: np.ndarray, percdamp: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper Cholesky factor of `(H + damp I)^-1` and the mask of dead (never active) inputs."""
    h = np.array(xtx, np.float64, copy=True)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    damp = percdamp * float(np.mean(np.diag(h)))
    h[np.diag_indices_from(h)] += damp
    chol = np.linalg.cholesky(h)
    eye = np.eye(len(h))
    inv_l = np.linalg.solve(chol, eye)
    hinv = inv_l.T @ inv_l
    return np.linalg.cholesky(hinv).T, dead


def gptq_quantize(
    weight: np.ndarray, xtx: np.ndarray, fmt: str = "hif4", *, percdamp: float = 0.01,
) -> np.ndarray:
    """GPTQ of a kernel `[in, out]` on `fmt`'s grid; float32 values on the grid."""
    if fmt not in GRIDS:
        raise ValueError(f"no GPTQ grid for format {fmt!r}; choose one of {sorted(GRIDS)}")
    k, n = weight.shape
    if xtx.shape != (k, k):
        raise ValueError(f"X^T X must be [{k}, {k}] for a kernel {weight.shape}, got {xtx.shape}")
    g = formats.get_format(fmt).group_size
    block = max(BLOCK, g)
    k_pad = -(-k // block) * block
    w = np.zeros((k_pad, n), np.float32)
    w[:k] = weight
    h = np.zeros((k_pad, k_pad))
    h[:k, :k] = xtx
    u, dead = inverse_hessian_factor(h, percdamp)
    del dead  # inputs that never fired keep their weights (rounded without feedback)
    w = jnp.asarray(w)
    u = jnp.asarray(u, jnp.float32)
    out = []
    for i1 in range(0, k_pad, block):
        i2 = i1 + block
        q1, e1 = _quant_block(w[i1:i2], u[i1:i2, i1:i2], fmt)
        out.append(q1)
        if i2 < k_pad:
            w = w.at[i2:].add(-jnp.matmul(u[i1:i2, i2:].T, e1,
                                          precision=jax.lax.Precision.HIGHEST))
    q = np.asarray(jnp.concatenate(out, axis=0))[:k]
    if not np.all(np.isfinite(q)):
        raise FloatingPointError("GPTQ produced non-finite weights")
    return q


def output_error(x: np.ndarray, weight: np.ndarray, quantized: np.ndarray) -> float:
    """`||x Wq - x W|| / ||x W||` (weight-only error on tokens `x`)."""
    ref = x.astype(np.float64) @ weight.astype(np.float64)
    out = x.astype(np.float64) @ quantized.astype(np.float64)
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))
