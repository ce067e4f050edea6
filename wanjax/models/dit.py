"""The Wan2.2 diffusion transformer (official `WanModel`) in Flax NNX.

Data path: latents `[B, C, F, H, W]` -> patch tokens -> blocks (time-modulated self-attention with
3-D RoPE, cross-attention to the text context, FFN) -> head -> velocity `[B, C, F, H, W]` (float32).
Spec: shared/docs/wan22_spec.md section 2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from wanjax.config import DiTConfig, Precision
from wanjax.models.attention import Backend
from wanjax.models.blocks import WanBlock, gelu_tanh
from wanjax.models.embeddings import patchify, rope_tables, timestep_sinusoid, unpatchify
from wanjax.models.layers import LayerNorm, Linear
from wanjax.parallel.mesh import axis_size
from wanjax.parallel.sequence import constrain_tokens

_FP32 = Precision()


class MLP2(nnx.Module):
    """`linear_2(act(linear_1(x)))`: the text and time embedding MLPs."""

    def __init__(self, d_in: int, d_out: int, act, *, param_dtype, compute_dtype, rngs):
        kw = dict(param_dtype=param_dtype, compute_dtype=compute_dtype, rngs=rngs)
        self.act = act
        self.linear_1 = Linear(d_in, d_out, **kw)
        self.linear_2 = Linear(d_out, d_out, **kw)

    def __call__(self, x: Array) -> Array:
        return self.linear_2(self.act(self.linear_1(x)))


class Head(nnx.Module):
    """Output head conditioned on the time embedding `e` (not on `e0`)."""

    def __init__(self, cfg: DiTConfig, prec: Precision, *, rngs: nnx.Rngs):
        pd = prec.param_dtype
        init = jax.random.normal(rngs.params(), (1, 2, cfg.dim), jnp.float32) / cfg.dim**0.5
        self.modulation = nnx.Param(init.astype(pd))
        self.norm = LayerNorm(cfg.dim, eps=cfg.eps, affine=False, param_dtype=pd, rngs=rngs)
        self.proj = Linear(
            cfg.dim, cfg.out_dim * cfg.patch_volume, param_dtype=pd,
            compute_dtype=jnp.float32, kernel_init=nnx.initializers.zeros_init(), rngs=rngs,
        )

    def __call__(self, x: Float[Array, "b l d"], e: Float[Array, "b t d"]) -> Array:
        mod = self.modulation[...].astype(jnp.float32)[:, None] + e[:, :, None, :]
        shift, scale = mod[:, :, 0], mod[:, :, 1]
        return self.proj(self.norm(x) * (1 + scale) + shift)


class WanDiT(nnx.Module):
    """One Wan DiT expert. `__call__` assumes validated inputs; use `wanjax.load_dit` for checks."""

    def __init__(
        self,
        cfg: DiTConfig,
        prec: Precision = _FP32,
        *,
        rngs: nnx.Rngs,
        remat: bool = False,
        attention_backend: Backend = "auto",
    ):
        self.cfg = cfg
        self.remat = remat
        self.attention_backend = attention_backend
        pd, cd = prec.param_dtype, prec.compute_dtype
        self.patch_embedding = Linear(
            cfg.patch_volume * cfg.in_dim, cfg.dim, param_dtype=pd, compute_dtype=cd, rngs=rngs
        )
        self.text_embedding = MLP2(
            cfg.text_dim, cfg.dim, gelu_tanh, param_dtype=pd, compute_dtype=cd, rngs=rngs
        )
        self.time_embedding = MLP2(
            cfg.freq_dim, cfg.dim, jax.nn.silu, param_dtype=pd, compute_dtype=jnp.float32,
            rngs=rngs,
        )
        self.time_projection = Linear(
            cfg.dim, 6 * cfg.dim, param_dtype=pd, compute_dtype=jnp.float32, rngs=rngs
        )
        self.blocks = nnx.List([WanBlock(cfg, prec, rngs=rngs) for _ in range(cfg.num_layers)])
        self.head = Head(cfg, prec, rngs=rngs)

    def _run_block(self, block: WanBlock, x, e0, ctx, rope, key_lengths):
        """One block; with `remat`, its activations are recomputed in the backward pass.

        Rematerialisation uses `jax.checkpoint` on the block's split state (a pure function):
        blocks hold no mutable state, and this composes with any enclosing trace (loops, conds).
        """
        backend = self.attention_backend
        if not self.remat:
            return block(x, e0, ctx, rope, key_lengths, backend=backend)
        graphdef, state = nnx.split(block)

        @jax.checkpoint
        def apply(state, x, e0, ctx, rope, key_lengths):
            return nnx.merge(graphdef, state)(x, e0, ctx, rope, key_lengths, backend=backend)

        return apply(state, x, e0, ctx, rope, key_lengths)

    def embed_time(self, timestep: Array) -> tuple[Array, Array]:
        """`e [B, T, D]` and `e0 [B, T, 6, D]` in float32; T = 1 for a per-sample timestep.

        Computing this once per sample instead of per token is exact for T2V (spec item 19).
        """
        t = timestep[:, None] if timestep.ndim == 1 else timestep
        e = self.time_embedding(timestep_sinusoid(t, self.cfg.freq_dim))
        e0 = self.time_projection(jax.nn.silu(e))
        return e, e0.reshape(*e0.shape[:-1], 6, self.cfg.dim)

    def embed_text(self, context: Float[Array, "b lc c"]) -> Float[Array, "b text_len d"]:
        """Zero-pads the context to `text_len` rows, then applies the MLP (pads stay unmasked)."""
        pad = self.cfg.text_len - context.shape[1]
        context = jnp.pad(context, ((0, 0), (0, pad), (0, 0)))
        return self.text_embedding(context)

    def __call__(
        self,
        latents: Float[Array, "b c f h w"],
        timestep: Array,
        context: Float[Array, "b lc c"],
        return_features: bool = False,
    ) -> Float[Array, "b c f h w"] | tuple[Array, Float[Array, "b l d"]]:
        """The velocity; with `return_features` also the last block's tokens `[B, L, D]` in
        float32 (what the DMD2 GAN head of the critic reads)."""
        cfg = self.cfg
        _, _, f, h, w = latents.shape
        pt, ph, pw = cfg.patch_size
        grid = (f // pt, h // ph, w // pw)
        cos, sin = rope_tables(grid, cfg.rope_dims, cfg.rope_theta)
        x = self.patch_embedding(patchify(jnp.moveaxis(latents, 1, -1), cfg.patch_size))
        length = x.shape[1]

        # Under sequence parallelism, pad tokens to a multiple of the axis (spec section 7): pads
        # get an identity rotation, the edge timestep, and are masked as self-attention keys.
        pad = -length % axis_size("sequence")
        key_lengths = None
        if pad:
            x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
            cos = np.pad(cos, ((0, pad), (0, 0)), constant_values=1.0)
            sin = np.pad(sin, ((0, pad), (0, 0)))
            key_lengths = jnp.full((x.shape[0],), length, jnp.int32)
            if timestep.ndim == 2:
                timestep = jnp.pad(timestep, ((0, 0), (0, pad)), mode="edge")
        x = constrain_tokens(x)
        rope = (jnp.asarray(cos), jnp.asarray(sin))
        e, e0 = self.embed_time(timestep)
        ctx = self.embed_text(context)

        for block in self.blocks:
            x = self._run_block(block, x, e0, ctx, rope, key_lengths)

        x, e = x[:, :length], e[:, :length]
        out = unpatchify(self.head(x, e), grid, cfg.patch_size).astype(jnp.float32)
        return (out, x.astype(jnp.float32)) if return_features else out
