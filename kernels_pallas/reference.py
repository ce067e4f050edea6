"""The pure-jnp path: dequantize the tiled weight with the kernels' integer arithmetic, then
`jnp.dot`. Used on CPU, as the fallback on other platforms, and as the kernels' in-repo twin."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from kernels_pallas.dequant import dot_precision, plane_values
from kernels_pallas.layout import CHUNK, GROUP, PLANES, TiledWeight


def dequantize_padded(w: TiledWeight, dtype=jnp.float32) -> Float[Array, "k_pad n_pad"]:
    """All planes of all chunks at once: `[chunks, 8, 64, N]`, which is K order already."""
    k_pad, n_pad = w.padded_shape
    chunks = k_pad // CHUNK
    words = w.codes.reshape(chunks, 1, GROUP, n_pad)
    scale_rows = w.scales.reshape(chunks, PLANES, 1, n_pad)
    planes = jnp.arange(PLANES, dtype=jnp.uint32).reshape(1, PLANES, 1, 1)
    return plane_values(words, scale_rows, planes, dtype).reshape(k_pad, n_pad)


def dequantize(w: TiledWeight, dtype=jnp.float32) -> Float[Array, "k n"]:
    """`dequant(W)` with the original shape; equals `wanjax.quant.unpack` bit for bit."""
    k, n = w.shape
    return dequantize_padded(w, dtype)[:k, :n]


def reference_matmul(
    x: Float[Array, "m k_pad"], w: TiledWeight, *, out_dtype=jnp.float32
) -> Float[Array, "m n_pad"]:
    """`x @ dequant(W)` on padded shapes, float32 accumulation (same contract as the kernels)."""
    dense = dequantize_padded(w, x.dtype)
    y = jnp.dot(x, dense, preferred_element_type=jnp.float32, precision=dot_precision(x.dtype))
    return y.astype(out_dtype)


def summation_error_bound(x, w) -> np.ndarray:
    """Elementwise bound on `|fl32(x @ w) - (x @ w)|` for float32 accumulation of K products,
    `(K + 2) * 2^-24 * (|x| @ |w|)`: any summation order of K float32 additions of exact or
    once-rounded products stays within it. What the kernels' correctness checks compare to."""
    x64, w64 = np.abs(np.asarray(x, np.float64)), np.abs(np.asarray(w, np.float64))
    return (w64.shape[0] + 2) * 2.0**-24 * (x64 @ w64)
