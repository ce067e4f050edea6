"""Pallas TPU (Mosaic) kernels for `x @ dequant(W)` with a tiled HiF4 weight.

Two kernels, both accumulating in a float32 VMEM scratch and both dequantizing each weight tile
exactly once:

- streaming (small M): grid (N tiles, K tiles); all M rows form one block, so every packed weight
  tile is read from HBM once, dequantized into a VMEM tile and multiplied at once. The weight
  stream (4.5 bits per value) is the whole cost, which is where 4-bit weights pay off.
- cached panel (large M): grid (N tiles, M tiles, K tiles). For the first M tile the kernel
  dequantizes its `[block_k, block_n]` weight tiles into a `[K, block_n]` VMEM panel; later M
  tiles reuse the panel, and the weight BlockSpec then points at a fixed block so Pallas fetches
  no more packed bytes. The M and K axes are sequential ("arbitrary"); N is "parallel", so on
  megacore chips each TensorCore owns whole N panels and its own scratch.

Dequantization writes each group's 64 rows to an aligned sublane offset of the VMEM tile (no
concatenation or relayout), using `dequant.plane_values`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jaxtyping import Array, Float

from kernels_pallas.blocks import BlockSizes
from kernels_pallas.dequant import dot_precision, plane_values
from kernels_pallas.layout import CHUNK, GROUP, PLANES, TiledWeight


def dequantize_tile(words_ref, scales_ref, out_ref, row0=0) -> None:
    """Dequantize a `[bk/8, bn]` word block (+ its `[bk/64, bn]` scales) into `out_ref` rows
    `row0 .. row0 + bk`, one 64-row group at a time."""
    for chunk in range(words_ref.shape[0] // GROUP):
        words = words_ref[pl.ds(chunk * GROUP, GROUP), :]
        for plane in range(PLANES):
            scale_row = scales_ref[pl.ds(chunk * PLANES + plane, 1), :]
            rows = pl.ds(row0 + chunk * CHUNK + plane * GROUP, GROUP)
            out_ref[rows, :] = plane_values(words, scale_row, plane, out_ref.dtype)


def _streaming_kernel(x_ref, words_ref, scales_ref, out_ref, acc_ref, tile_ref):
    k = pl.program_id(1)

    @pl.when(k == 0)
    def _():
        acc_ref[...] = jnp.zeros_like(acc_ref)

    dequantize_tile(words_ref, scales_ref, tile_ref)
    acc_ref[...] += jnp.dot(
        x_ref[...], tile_ref[...], preferred_element_type=jnp.float32,
        precision=dot_precision(x_ref.dtype),
    )

    @pl.when(k == pl.num_programs(1) - 1)
    def _():
        out_ref[...] = acc_ref[...].astype(out_ref.dtype)


def _panel_kernel(x_ref, words_ref, scales_ref, out_ref, acc_ref, panel_ref, *, block_k: int):
    i, k = pl.program_id(1), pl.program_id(2)
    row0 = pl.multiple_of(k * block_k, block_k)

    @pl.when(i == 0)
    def _():
        dequantize_tile(words_ref, scales_ref, panel_ref, row0)

    @pl.when(k == 0)
    def _():
        acc_ref[...] = jnp.zeros_like(acc_ref)

    acc_ref[...] += jnp.dot(
        x_ref[...], panel_ref[pl.ds(row0, block_k), :], preferred_element_type=jnp.float32,
        precision=dot_precision(x_ref.dtype),
    )

    @pl.when(k == pl.num_programs(2) - 1)
    def _():
        out_ref[...] = acc_ref[...].astype(out_ref.dtype)


def _cost(m: int, w: TiledWeight, block_n: int, x_itemsize: int, out_itemsize: int):
    """For XLA's scheduler: x is streamed once per N tile, the packed weight once."""
    k_pad, n_pad = w.padded_shape
    x_bytes = m * k_pad * x_itemsize * (n_pad // block_n)
    return pl.CostEstimate(
        flops=2 * m * k_pad * n_pad, transcendentals=0,
        bytes_accessed=x_bytes + w.nbytes() + m * n_pad * out_itemsize,
    )


def tpu_matmul(
    x: Float[Array, "m k_pad"],
    w: TiledWeight,
    blocks: BlockSizes,
    *,
    out_dtype=jnp.float32,
    interpret: bool | pltpu.InterpretParams = False,
) -> Float[Array, "m n_pad"]:
    """`x @ dequant(w)` on padded shapes; streaming when `m <= blocks.small_m`, else the panel."""
    m, k_pad = x.shape
    n_pad = w.padded_shape[1]
    bn, bk = blocks.block_n, blocks.block_k

    def params(*semantics: str) -> pltpu.CompilerParams:
        return pltpu.CompilerParams(
            dimension_semantics=semantics, vmem_limit_bytes=blocks.vmem_limit_bytes
        )

    common = dict(
        out_shape=jax.ShapeDtypeStruct((m, n_pad), out_dtype), interpret=interpret,
        cost_estimate=_cost(m, w, bn, x.dtype.itemsize, jnp.dtype(out_dtype).itemsize),
    )
    if m <= blocks.small_m:
        call = pl.pallas_call(
            _streaming_kernel,
            grid=(n_pad // bn, k_pad // bk),
            in_specs=[
                pl.BlockSpec((m, bk), lambda j, k: (0, k)),
                pl.BlockSpec((bk // PLANES, bn), lambda j, k: (k, j)),
                pl.BlockSpec((bk // GROUP, bn), lambda j, k: (k, j)),
            ],
            out_specs=pl.BlockSpec((m, bn), lambda j, k: (0, j)),
            scratch_shapes=[pltpu.VMEM((m, bn), jnp.float32), pltpu.VMEM((bk, bn), x.dtype)],
            compiler_params=params("parallel", "arbitrary"),
            name="hif4_matmul_tpu_streaming",
            **common,
        )
        return call(x, w.codes, w.scales)

    bm = min(blocks.block_m, -(-m // 16) * 16)
    if bm % 8:
        raise ValueError(f"block_m {bm} must be a multiple of 8 for the TPU panel kernel")
    nk = k_pad // bk

    def weight_block(j, i, k):
        return jnp.where(i == 0, k, nk - 1), j  # after the first M tile: no new fetches

    call = pl.pallas_call(
        functools.partial(_panel_kernel, block_k=bk),
        grid=(n_pad // bn, pl.cdiv(m, bm), nk),
        in_specs=[
            pl.BlockSpec((bm, bk), lambda j, i, k: (i, k)),
            pl.BlockSpec((bk // PLANES, bn), weight_block),
            pl.BlockSpec((bk // GROUP, bn), weight_block),
        ],
        out_specs=pl.BlockSpec((bm, bn), lambda j, i, k: (i, j)),
        scratch_shapes=[pltpu.VMEM((bm, bn), jnp.float32), pltpu.VMEM((k_pad, bn), x.dtype)],
        compiler_params=params("parallel", "arbitrary", "arbitrary"),
        name="hif4_matmul_tpu_panel",
        **common,
    )
    return call(x, w.codes, w.scales)

