"""Pallas GPU (Triton) kernels for `x @ dequant(W)` with a tiled HiF4 weight.

- fused (small M): grid (M tiles, N tiles); each program walks K in 512-row chunks, loads one
  `[64, block_n]` word tile per chunk and, for each of its 8 planes, dequantizes one group
  (`[64, block_n]`) in registers and multiplies it with the matching `[block_m, 64]` activation
  slice loaded straight from memory. Every load is a power-of-two tile taken from a ref (Triton
  cannot slice or concatenate loaded values), and nothing is concatenated.
- dequantize (large M): a Triton kernel writes `dequant(W)` in the activation dtype, and XLA's
  matmul (cuBLAS on NVIDIA) multiplies. At large M the product is compute-bound and the extra
  `K * N * 2` bytes cost about 1% (shared/docs/kernel_notes.md), while a fused kernel would redo
  the dequantization M / block_m times on the ALUs.

Triton has no scratch memory, so the accumulator is the loop carry. Partial M tiles are masked by
Pallas on load and store.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jaxtyping import Array, Float

from kernels_pallas.blocks import BlockSizes
from kernels_pallas.dequant import dot_precision, plane_values
from kernels_pallas.layout import CHUNK, GROUP, PLANES, TiledWeight


def _fused_kernel(x_ref, words_ref, scales_ref, out_ref):
    block_m, block_n = out_ref.shape
    precision = dot_precision(x_ref.dtype)

    def chunk_step(chunk, acc):
        words = words_ref[pl.ds(chunk * GROUP, GROUP), :]
        for plane in range(PLANES):
            scale_row = scales_ref[pl.ds(chunk * PLANES + plane, 1), :]
            w = plane_values(words, scale_row, plane, x_ref.dtype)
            x = x_ref[:, pl.ds(chunk * CHUNK + plane * GROUP, GROUP)]
            acc += jnp.dot(x, w, preferred_element_type=jnp.float32, precision=precision)
        return acc

    chunks = words_ref.shape[0] // GROUP
    acc = jax.lax.fori_loop(0, chunks, chunk_step, jnp.zeros((block_m, block_n), jnp.float32))
    out_ref[...] = acc.astype(out_ref.dtype)


def _dequantize_kernel(words_ref, scales_ref, out_ref):
    words = words_ref[...]
    for plane in range(PLANES):
        scale_row = scales_ref[pl.ds(plane, 1), :]
        out_ref[pl.ds(plane * GROUP, GROUP), :] = plane_values(
            words, scale_row, plane, out_ref.dtype
        )


def _params(blocks: BlockSizes) -> plgpu.CompilerParams:
    return plgpu.CompilerParams(num_warps=blocks.num_warps, num_stages=blocks.num_stages)


def gpu_fused_matmul(
    x: Float[Array, "m k_pad"], w: TiledWeight, blocks: BlockSizes, *,
    out_dtype=jnp.float32, interpret: bool = False,
) -> Float[Array, "m n_pad"]:
    """The fused Triton kernel (any M; chosen for `m <= blocks.small_m`)."""
    m, k_pad = x.shape
    n_pad = w.padded_shape[1]
    bm, bn = blocks.block_m, blocks.block_n
    call = pl.pallas_call(
        _fused_kernel,
        grid=(pl.cdiv(m, bm), n_pad // bn),
        in_specs=[
            pl.BlockSpec((bm, k_pad), lambda i, j: (i, 0)),
            pl.BlockSpec((k_pad // PLANES, bn), lambda i, j: (0, j)),
            pl.BlockSpec((k_pad // GROUP, bn), lambda i, j: (0, j)),
        ],
        out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((m, n_pad), out_dtype),
        compiler_params=_params(blocks),
        interpret=interpret,
        name="hif4_matmul_gpu_fused",
    )
    return call(x, w.codes, w.scales)


def gpu_dequantize(
    w: TiledWeight, dtype, blocks: BlockSizes, *, interpret: bool = False
) -> Float[Array, "k_pad n_pad"]:
    """`dequant(W)` (padded) in `dtype`, one 512-row chunk by `block_n` columns per program."""
    k_pad, n_pad = w.padded_shape
    bn = blocks.block_n
    call = pl.pallas_call(
        _dequantize_kernel,
        grid=(k_pad // CHUNK, n_pad // bn),
        in_specs=[
            pl.BlockSpec((GROUP, bn), lambda c, j: (c, j)),
            pl.BlockSpec((PLANES, bn), lambda c, j: (c, j)),
        ],
        out_specs=pl.BlockSpec((CHUNK, bn), lambda c, j: (c, j)),
        out_shape=jax.ShapeDtypeStruct((k_pad, n_pad), dtype),
        compiler_params=_params(blocks),
        interpret=interpret,
        name="hif4_dequantize_gpu",
    )
    return call(w.codes, w.scales)


def gpu_matmul(
    x: Float[Array, "m k_pad"], w: TiledWeight, blocks: BlockSizes, *,
    out_dtype=jnp.float32, interpret: bool = False,
) -> Float[Array, "m n_pad"]:
    """Fused kernel for `m <= blocks.small_m`, else dequantize-then-matmul."""
    if x.shape[0] <= blocks.small_m:
        return gpu_fused_matmul(x, w, blocks, out_dtype=out_dtype, interpret=interpret)
    dense = gpu_dequantize(w, x.dtype, blocks, interpret=interpret)
    y = jnp.dot(x, dense, preferred_element_type=jnp.float32, precision=dot_precision(x.dtype))
    return y.astype(out_dtype)

