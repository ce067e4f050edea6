"""A compiled, input-checking callable around a `WanDiT`: what `wanjax.load_dit` returns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from wanjax.config import DiTConfig
from wanjax.models.dit import WanDiT


def check_dit_inputs(cfg: DiTConfig, latents, timestep, context) -> None:
    """Raises ValueError naming the offending shape for inputs the DiT cannot take."""
    shape = tuple(np.shape(latents))
    if len(shape) != 5:
        raise ValueError(f"latents must be [B, C, F, H, W]; got shape {shape}")
    b, c, f, h, w = shape
    if c != cfg.in_dim:
        raise ValueError(f"latents have {c} channels (shape {shape}); the model takes {cfg.in_dim}")
    for name, size, p in zip(("frames", "height", "width"), (f, h, w), cfg.patch_size, strict=True):
        if size % p or size == 0:
            raise ValueError(
                f"latent {name} {size} (shape {shape}) is not a positive multiple of the patch "
                f"size {p} (patch_size {cfg.patch_size})"
            )
    t_shape = tuple(np.shape(timestep))
    if t_shape not in ((b,), (b, (f // cfg.patch_size[0]) * (h // cfg.patch_size[1]) * (w // cfg.patch_size[2]))):
        raise ValueError(f"timestep must be [B] (or [B, tokens]); got shape {t_shape} for batch {b}")
    c_shape = tuple(np.shape(context))
    if len(c_shape) != 3 or c_shape[0] != b:
        raise ValueError(f"context must be [B={b}, L, {cfg.text_dim}]; got shape {c_shape}")
    if c_shape[2] != cfg.text_dim:
        raise ValueError(f"context width {c_shape[2]} (shape {c_shape}) != text_dim {cfg.text_dim}")
    if c_shape[1] > cfg.text_len:
        raise ValueError(f"context length {c_shape[1]} (shape {c_shape}) exceeds text_len {cfg.text_len}")


class DiT:
    """`model(latents [B,C,F,H,W], timestep [B], context [B,L,text_dim]) -> velocity` (float32).

    Inputs are checked, then run through one jitted function: it compiles once per input shape and
    dtype and is reused for new values. `trace_count` counts compilations (for tests and benches).
    """

    def __init__(self, module: WanDiT):
        self.cfg = module.cfg
        self.graphdef, self.state = nnx.split(module)
        self.trace_count = 0

        def forward(state, latents, timestep, context):
            self.trace_count += 1
            return nnx.merge(self.graphdef, state)(latents, timestep, context)

        self._forward = jax.jit(forward)

    @property
    def module(self) -> WanDiT:
        return nnx.merge(self.graphdef, self.state)

    def __call__(
        self, latents: Float[Array, "b c f h w"], timestep: Array, context: Float[Array, "b l d"]
    ) -> Float[Array, "b c f h w"]:
        check_dit_inputs(self.cfg, latents, timestep, context)
        return self._forward(
            self.state, jnp.asarray(latents), jnp.asarray(timestep), jnp.asarray(context)
        )
