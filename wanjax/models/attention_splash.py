"""Pallas splash attention (TPU): dense bidirectional attention with padded keys masked.

Splash needs sequence lengths in multiples of its blocks, so queries and keys are zero-padded to a
multiple of 128 and padded keys are masked with segment ids (valid keys: segment 0, pads: 1; all
queries: 0). Queries are pre-scaled by 1/sqrt(d) because the kernel does not scale.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
from jaxtyping import Array, Float, Int

LANE = 128


def _block(length: int, preferred: int = 512) -> int:
    for b in (preferred, 256, LANE):
        if length % b == 0:
            return b
    return LANE


@functools.lru_cache(maxsize=32)
def _kernel(heads: int, lq: int, lk: int, interpret: bool):
    bq, bk = _block(lq), _block(lk)
    mask = masks.MultiHeadMask([masks.FullMask((lq, lk)) for _ in range(heads)])
    sizes = splash.BlockSizes(
        block_q=bq, block_kv=bk, block_kv_compute=bk,
        block_q_dkv=bq, block_kv_dkv=bk, block_kv_dkv_compute=bk, use_fused_bwd_kernel=True,
    )
    return splash.make_splash_mha_single_device(mask, block_sizes=sizes, interpret=interpret)


def _pad_len(x: Array, length: int) -> Array:
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0)))


def splash_attention(
    q: Float[Array, "b lq n d"],
    k: Float[Array, "b lk n d"],
    v: Float[Array, "b lk n d"],
    key_lengths: Int[Array, " b"] | None = None,
    *,
    interpret: bool = False,
) -> Float[Array, "b lq n d"]:
    """softmax(q k^T / sqrt(d)) v on TPU through the splash kernel."""
    b, lq, n, d = q.shape
    lk = k.shape[1]
    lq_pad, lk_pad = -(-lq // LANE) * LANE, -(-lk // LANE) * LANE
    q = _pad_len(q * jnp.asarray(d**-0.5, q.dtype), lq_pad)
    k, v = _pad_len(k, lk_pad), _pad_len(v, lk_pad)
    if key_lengths is None:
        key_lengths = jnp.full((b,), lk, jnp.int32)
    kv_segments = (jnp.arange(lk_pad)[None, :] >= key_lengths[:, None]).astype(jnp.int32)
    q_segments = jnp.zeros((b, lq_pad), jnp.int32)
    kernel = _kernel(n, lq_pad, lk_pad, interpret)

    def one(q, k, v, qs, ks):  # [L, N, d] -> the kernel's head-major [N, L, d]
        out = kernel(q.swapaxes(0, 1), k.swapaxes(0, 1), v.swapaxes(0, 1),
                     segment_ids=splash.SegmentIds(q=qs, kv=ks))
        return out.swapaxes(0, 1)

    out = jax.vmap(one)(q, k, v, q_segments, kv_segments)
    return out[:, :lq]
