"""The tiny model and inputs shared by the two-process test and its single-process reference."""

import jax
import jax.numpy as jnp
from flax import nnx

from wanjax.config import DiTConfig
from wanjax.models.dit import WanDiT

CFG = DiTConfig(dim=32, ffn_dim=64, num_heads=4, num_layers=2, text_dim=16, freq_dim=16,
                text_len=8)


def model() -> WanDiT:
    m = WanDiT(CFG, rngs=nnx.Rngs(0))
    m.head.proj.kernel.set_value(jax.random.normal(jax.random.key(5), m.head.proj.kernel.shape))
    return m


def inputs():
    k = jax.random.split(jax.random.key(1), 2)
    return (jax.random.normal(k[0], (2, 16, 3, 4, 4)), jnp.array([900, 100]),
            jax.random.normal(k[1], (2, 5, 16)))
