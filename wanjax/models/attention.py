"""Multi-head attention behind one function, with a backend choice.

Backends: 'xla' (`jax.nn.dot_product_attention`, any platform), 'cudnn' (flash attention on NVIDIA
GPUs, bf16/fp16 only) and 'splash' (Pallas splash attention on TPU).
'auto' picks per platform at trace time. Softmax scale is 1/sqrt(head_dim), as in the official model.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from wanjax.models.attention_splash import splash_attention
from wanjax.parallel.mesh import axis_size
from wanjax.parallel.sequence import ulysses_attention

Backend = Literal["auto", "xla", "cudnn", "splash"]
BACKENDS = ("auto", "xla", "cudnn", "splash")


def resolve_backend(backend: Backend, dtype) -> str:
    """Chooses the concrete attention implementation for this platform and dtype."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    platform = jax.default_backend()
    if platform == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    if platform == "tpu":
        return "splash"
    return "xla"


def attention(
    q: Float[Array, "b lq n d"],
    k: Float[Array, "b lk n d"],
    v: Float[Array, "b lk n d"],
    *,
    key_lengths: Int[Array, " b"] | None = None,
    backend: Backend = "auto",
    sequence_parallel: bool = False,
) -> Float[Array, "b lq n d"]:
    """softmax(q k^T / sqrt(d)) v; keys at positions >= `key_lengths` are masked (padding).

    With `sequence_parallel` and a mesh whose `sequence` axis is > 1 in context, runs Ulysses
    attention over that axis (self-attention only; the caller pads tokens to a multiple).
    """
    impl = resolve_backend(backend, q.dtype)

    def local(q, k, v, lengths):
        if impl == "splash":
            return splash_attention(q, k, v, lengths)
        return jax.nn.dot_product_attention(
            q, k, v, key_value_seq_lengths=lengths, implementation=impl
        )

    if sequence_parallel and axis_size("sequence") > 1:
        return ulysses_attention(q, k, v, key_lengths, local)
    return local(q, k, v, key_lengths)
