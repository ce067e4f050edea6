"""Pack values that are already HiF4-dequantized, losslessly (`pack` would re-quantize them).

HiF4 quantization is not idempotent, so `pack(fake_quant(W))` can differ from `fake_quant(W)`.
A layer whose kernel already holds `Q(W * s)` (`QuantLinear.quantize_weights_`) is therefore
encoded by search instead: for each group, try the scales S that make the group maximum an exact
`q * 2^e * S / 4` (q in 1..7, e in 0..2; at most 21 candidates, most likely first), and keep the
first S for which every micro-block of 4 has an exponent e = a + b with a shared per 8:

    e_max = the largest e in 0..2 dividing every u = |v| * 4 / S of the micro-block
    e_min = the smallest e with max(u) <= 7 * 2^e
    a = 0 if both micro-blocks of the 8 allow e <= 1, else 1;  b = max(e_min - a, 0)

Any encoding that decodes to the same values is as good as the original one. The result is
checked against `unpack` bit for bit; values off the HiF4 grid raise ValueError. Runs in numpy
(float64, exact here) on the host, in chunks of groups, at conversion time.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from wanjax.quant import grouping, hif4, packing

_CANDIDATES = tuple((e, q) for e in (2, 1, 0) for q in range(7, 0, -1))
_CHUNK_GROUPS = 1 << 16


def _is_e6m2(s: np.ndarray) -> np.ndarray:
    mantissa, _ = np.frexp(s)
    in_range = (s >= hif4.SCALE_MIN) & (s <= hif4.SCALE_MAX)
    return in_range & (mantissa * 8 == np.round(mantissa * 8))


def _try_scale(mag: np.ndarray, scale: np.ndarray):
    """Fields for groups `mag [G, 64]` at `scale [G]`, and which groups they encode exactly."""
    u = mag * 4 / scale[:, None]
    ok = np.all((u == np.round(u)) & (u <= 4 * hif4.MAX_Q), axis=1) & _is_e6m2(scale)
    u = np.where(ok[:, None], u, 0).astype(np.int64).reshape(-1, 8, 2, 4)
    twos = np.where(u % 4 == 0, 2, np.where(u % 2 == 0, 1, 0))  # 0 counts as divisible by 4
    e_max = twos.min(axis=-1)  # [G, 8, 2]
    top = u.max(axis=-1)
    e_min = np.select([top <= 7, top <= 14, top <= 28], [0, 1, 2], 3)
    a = np.where(np.all(e_min <= 1, axis=-1), 0, 1)  # [G, 8]
    b = np.maximum(e_min - a[..., None], 0)
    exponent = a[..., None] + b
    ok &= np.all((e_min <= e_max) & (b <= 1) & (exponent <= e_max), axis=(1, 2))
    q = u >> exponent[..., None]
    return ok, q.reshape(-1, hif4.GROUP_SIZE), a.astype(bool), b.reshape(-1, 16).astype(bool)


def _encode_groups(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical codes `[G, 32]` and scales `[G, 4]` for float32 groups `[G, 64]`."""
    mag = np.abs(groups.astype(np.float64))
    top = mag.max(axis=1)
    n = len(groups)
    scale = np.full(n, hif4.SCALE_MIN)  # an all-zero group: S = 2^-48, codes 0
    q = np.zeros((n, hif4.GROUP_SIZE), np.int64)
    sub8, sub4 = np.zeros((n, 8), bool), np.zeros((n, 16), bool)
    todo = np.flatnonzero(top > 0)
    for e, qmax in _CANDIDATES:
        if not todo.size:
            break
        trial = top[todo] * 4 / (qmax * 2**e)
        ok, tq, ta, tb = _try_scale(mag[todo], trial)
        done = todo[ok]
        scale[done], q[done], sub8[done], sub4[done] = trial[ok], tq[ok], ta[ok], tb[ok]
        todo = todo[~ok]
    if todo.size:
        raise ValueError(
            f"{todo.size} groups of 64 are not HiF4-dequantized values (e.g. group {todo[0]}: "
            f"{groups[todo[0], :4]}...); pack raw weights with wanjax.quant.pack instead"
        )
    fields = hif4.HiF4Groups(
        negative=jnp.asarray(groups < 0), q=jnp.asarray(q.astype(np.uint8)),
        sub8=jnp.asarray(sub8), sub4=jnp.asarray(sub4), scale=jnp.asarray(scale, jnp.float32),
    )
    codes, scales = packing.encode(fields)
    return np.asarray(codes), np.asarray(scales)


def pack_exact(values: Float[Array, "*shape"], axis: int = -1) -> packing.PackedWeight:
    """The `PackedWeight` whose `unpack` equals `values` exactly (values on the HiF4 grid)."""
    grouping.check_floating(values, "values")
    values = np.asarray(values, np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError("cannot pack NaN/Inf values")
    axis = grouping.normalize_axis(axis, values.ndim)
    groups = np.asarray(grouping.to_groups(jnp.asarray(values), axis, hif4.GROUP_SIZE))
    flat = groups.reshape(-1, hif4.GROUP_SIZE)
    parts = [_encode_groups(flat[i : i + _CHUNK_GROUPS]) for i in range(0, len(flat), _CHUNK_GROUPS)]
    codes = np.concatenate([p[0] for p in parts]).reshape(*groups.shape[:-1], packing.CODE_BYTES)
    scales = np.concatenate([p[1] for p in parts]).reshape(*groups.shape[:-1], packing.SCALE_BYTES)
    packed = packing.PackedWeight(
        codes=jnp.asarray(codes), scales=jnp.asarray(scales), shape=values.shape, axis=axis
    )
    if not np.array_equal(np.asarray(packing.unpack(packed)), values):
        raise ValueError("internal error: the exact HiF4 encoding does not reproduce the values")
    return packed
