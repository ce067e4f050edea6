"""`hif4_matmul`: one entry point over the TPU kernels, the GPU kernels and the jnp reference.

'auto' selects at lowering time with `lax.platform_dependent` (TPU -> Mosaic kernels, CUDA ->
Triton kernels, anything else -> the reference), and inside each backend the static M picks the
small-M or large-M variant (`BlockSizes.small_m`). Only the branch for the platform being
compiled for is lowered, so 'auto' is safe to export for any platform.
"""

from __future__ import annotations

import functools
import weakref
from typing import Literal

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu
from jaxtyping import Array, Float

from kernels_pallas import layout
from kernels_pallas.blocks import BlockSizes, gpu_blocks, tpu_blocks
from kernels_pallas.gpu import gpu_matmul
from kernels_pallas.layout import TiledWeight
from kernels_pallas.reference import reference_matmul
from kernels_pallas.tpu import tpu_matmul
from wanjax.quant import PackedWeight

Backend = Literal["auto", "tpu", "gpu", "reference"]
BACKENDS = ("auto", "tpu", "gpu", "reference")
ACTIVATION_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))

_tiled_cache: dict[tuple[int, int], TiledWeight] = {}


def as_tiled(w: PackedWeight | TiledWeight) -> TiledWeight:
    """The kernel layout of `w`. A concrete canonical weight is tiled once and cached until its
    arrays are freed; under `jit` it is re-tiled in every trace, so tile ahead of time there
    (`layout.to_tiled`, as `PackedLinear` does)."""
    if isinstance(w, TiledWeight):
        layout.check_tiled(w)
        return w
    if not isinstance(w, PackedWeight):
        raise ValueError(f"expected a PackedWeight or TiledWeight, got {type(w).__name__}")
    if isinstance(w.codes, jax.core.Tracer) or isinstance(w.scales, jax.core.Tracer):
        return layout.to_tiled(w)
    key = (id(w.codes), id(w.scales))
    if key not in _tiled_cache:
        _tiled_cache[key] = layout.to_tiled(w)
        for array in (w.codes, w.scales):
            weakref.finalize(array, _tiled_cache.pop, key, None)
    return _tiled_cache[key]


def _check_inputs(x: Array, w: TiledWeight, backend: str, interpret) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if interpret and backend in ("auto", "reference"):
        raise ValueError(f"interpret=True needs backend 'tpu' or 'gpu', got {backend!r}")
    if isinstance(interpret, pltpu.InterpretParams) and backend != "tpu":
        raise ValueError("pltpu.InterpretParams only apply to backend 'tpu'")
    if jnp.dtype(x.dtype) not in ACTIVATION_DTYPES:
        raise ValueError(f"activations must be bfloat16 or float32, got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"activation shape {x.shape} does not match weight [K, N] = {w.shape}")


def hif4_matmul(
    x: Float[Array, "*m k"],
    w_packed: PackedWeight | TiledWeight,
    *,
    backend: Backend = "auto",
    interpret: bool | pltpu.InterpretParams = False,
    block_sizes: BlockSizes | None = None,
    out_dtype=jnp.float32,
) -> Float[Array, "*m n"]:
    """`x @ dequant(W)` for `w_packed = wanjax.quant.pack(W, 'hif4', axis=0)` of `W[K, N]`.

    `x` is bf16 or float32 (leading dims allowed); products of dequantized values (exact in
    bf16) accumulate in float32 and the result has `out_dtype`. `w_packed` may also be the
    kernel layout (`layout.to_tiled`). `backend`: 'auto' (per platform, see module docstring),
    'tpu', 'gpu' or 'reference'; `interpret=True` (or `pltpu.InterpretParams` for 'tpu') runs that
    backend's Pallas kernel in interpret mode, e.g. on a CPU. `block_sizes` overrides tiles and
    the small-M threshold.
    """
    w = as_tiled(w_packed)
    _check_inputs(x, w, backend, interpret)
    return _matmul(x, w, backend, interpret, block_sizes, jnp.dtype(out_dtype))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _matmul(x, w: TiledWeight, backend, interpret, block_sizes, out_dtype):
    """Jitted so that eager calls reuse the compiled kernels (inlined under an outer `jit`)."""
    (k, n), (k_pad, n_pad) = w.shape, w.padded_shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    if m == 0:
        return jnp.zeros((*lead, n), out_dtype)
    if k_pad != k:
        x2 = jnp.pad(x2, ((0, 0), (0, k_pad - k)))

    def on_tpu(x2):
        blocks = tpu_blocks(m, k_pad, n_pad, x2.dtype, block_sizes)
        return tpu_matmul(x2, w, blocks, out_dtype=out_dtype, interpret=interpret)

    def on_gpu(x2):
        blocks = gpu_blocks(m, k_pad, n_pad, x2.dtype, block_sizes)
        return gpu_matmul(x2, w, blocks, out_dtype=out_dtype, interpret=bool(interpret))

    def on_other(x2):
        return reference_matmul(x2, w, out_dtype=out_dtype)

    if backend == "auto":
        y = jax.lax.platform_dependent(x2, tpu=on_tpu, cuda=on_gpu, default=on_other)
    else:
        y = {"tpu": on_tpu, "gpu": on_gpu, "reference": on_other}[backend](x2)
    return y[:, :n].reshape(*lead, n)
