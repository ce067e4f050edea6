"""The Wan DiT transformer block: modulated self-attention with 3-D RoPE, cross-attention, FFN.

Precision follows the official run: norms in float32, modulation / gates / residual stream in
float32, every Linear in `compute_dtype`. Official `norm3` (the affine LayerNorm before
cross-attention) is `cross_norm` here; the parameter-free norms are `self_norm` and `ffn_norm`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from wanjax.config import DiTConfig, Precision
from wanjax.models.attention import Backend, attention
from wanjax.models.embeddings import apply_rope
from wanjax.models.layers import LayerNorm, Linear, RMSNorm


def gelu_tanh(x: Array) -> Array:
    """GELU (tanh approximation) evaluated in float32, rounded to the input dtype like torch."""
    return jax.nn.gelu(x.astype(jnp.float32), approximate=True).astype(x.dtype)


class Attention(nnx.Module):
    """q/k/v/o projections with RMSNorm over the full width of q and k (before heads split)."""

    def __init__(self, cfg: DiTConfig, prec: Precision, *, rngs: nnx.Rngs):
        def linear():
            return Linear(
                cfg.dim, cfg.dim, param_dtype=prec.param_dtype,
                compute_dtype=prec.compute_dtype, rngs=rngs,
            )

        self.num_heads = cfg.num_heads
        self.q, self.k, self.v, self.o = linear(), linear(), linear(), linear()
        self.norm_q = RMSNorm(cfg.dim, eps=cfg.eps, param_dtype=prec.param_dtype, rngs=rngs)
        self.norm_k = RMSNorm(cfg.dim, eps=cfg.eps, param_dtype=prec.param_dtype, rngs=rngs)

    def _heads(self, x: Array) -> Array:
        return x.reshape(*x.shape[:-1], self.num_heads, -1)

    def __call__(
        self,
        x: Float[Array, "b lq d"],
        context: Float[Array, "b lk d"] | None = None,
        rope: tuple[Array, Array] | None = None,
        key_lengths: Array | None = None,
        backend: Backend = "auto",
    ) -> Float[Array, "b lq d"]:
        kv_in = x if context is None else context
        q = self._heads(self.norm_q(self.q(x)))
        k = self._heads(self.norm_k(self.k(kv_in)))
        v = self._heads(self.v(kv_in))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        dtype = self.o.compute_dtype
        out = attention(
            q.astype(dtype), k.astype(dtype), v.astype(dtype),
            key_lengths=key_lengths, backend=backend, sequence_parallel=context is None,
        )
        return self.o(out.reshape(*out.shape[:-2], -1))


class FeedForward(nnx.Module):
    """`fc2(gelu_tanh(fc1(x)))` (official `ffn.0` / `ffn.2`)."""

    def __init__(self, cfg: DiTConfig, prec: Precision, *, rngs: nnx.Rngs):
        kw = dict(param_dtype=prec.param_dtype, compute_dtype=prec.compute_dtype, rngs=rngs)
        self.fc1 = Linear(cfg.dim, cfg.ffn_dim, **kw)
        self.fc2 = Linear(cfg.ffn_dim, cfg.dim, **kw)

    def __call__(self, x: Array) -> Array:
        return self.fc2(gelu_tanh(self.fc1(x)))


class WanBlock(nnx.Module):
    """One DiT block; `e0` is the 6-way time modulation `[B, T, 6, D]` (T = 1 or tokens)."""

    def __init__(self, cfg: DiTConfig, prec: Precision, *, rngs: nnx.Rngs):
        pd = prec.param_dtype
        init = jax.random.normal(rngs.params(), (1, 6, cfg.dim), jnp.float32) / cfg.dim**0.5
        self.modulation = nnx.Param(init.astype(pd))
        self.self_norm = LayerNorm(cfg.dim, eps=cfg.eps, affine=False, param_dtype=pd, rngs=rngs)
        self.self_attn = Attention(cfg, prec, rngs=rngs)
        self.cross_norm = LayerNorm(cfg.dim, eps=cfg.eps, affine=True, param_dtype=pd, rngs=rngs)
        self.cross_attn = Attention(cfg, prec, rngs=rngs)
        self.ffn_norm = LayerNorm(cfg.dim, eps=cfg.eps, affine=False, param_dtype=pd, rngs=rngs)
        self.ffn = FeedForward(cfg, prec, rngs=rngs)

    def __call__(
        self,
        x: Float[Array, "b l d"],
        e0: Float[Array, "b t 6 d"],
        context: Float[Array, "b lc d"],
        rope: tuple[Array, Array],
        key_lengths: Array | None = None,
        backend: Backend = "auto",
    ) -> Float[Array, "b l d"]:
        mod = self.modulation[...].astype(jnp.float32)[:, None] + e0
        sh1, sc1, g1, sh2, sc2, g2 = (mod[:, :, i] for i in range(6))

        y = self.self_norm(x).astype(jnp.float32) * (1 + sc1) + sh1
        y = self.self_attn(y, rope=rope, key_lengths=key_lengths, backend=backend)
        x = x.astype(jnp.float32) + y.astype(jnp.float32) * g1

        x = x + self.cross_attn(self.cross_norm(x), context, backend=backend).astype(jnp.float32)

        y = self.ffn_norm(x) * (1 + sc2) + sh2
        return x + self.ffn(y).astype(jnp.float32) * g2
