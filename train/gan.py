"""The optional GAN term of DMD2 (section 4.3 of Yin et al. 2024), as pure functions.

A small head on the critic's last-block tokens classifies noised samples as real or generated;
the critic (trunk and head) learns to tell them apart, the generator learns to fool it. The
head scores every token and the losses average over tokens (a patch discriminator), so a local
defect, such as a faint ghost in one token, costs as much as it would in a small image.

"Real" samples are the teacher's ODE endpoints (train/ode_pairs.py), the same pairs the
regression term uses: DMD2 feeds real images, but this pipeline has no videos, only prompts, and
the teacher's 40-step samples are the best data it has. Both sides are noised to the same noise
level with the stage's bridge before the critic sees them, as DMD2 does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Head = dict[str, Array]


def init_head(key: Array, dim: int, hidden: int) -> Head:
    """LayerNorm (no affine) -> Linear(dim, hidden) -> SiLU -> Linear(hidden, 1); the output
    layer starts at zero (every logit 0: the two losses start at log 2)."""
    return {
        "w1": jax.random.normal(key, (dim, hidden), jnp.float32) / dim**0.5,
        "b1": jnp.zeros((hidden,), jnp.float32),
        "w2": jnp.zeros((hidden, 1), jnp.float32),
        "b2": jnp.zeros((1,), jnp.float32),
    }


def logits(head: Head, tokens: Float[Array, "b l d"]) -> Float[Array, "b l"]:
    """One real-vs-generated logit per token."""
    x = tokens.astype(jnp.float32)
    mu = x.mean(-1, keepdims=True)
    x = (x - mu) * jax.lax.rsqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6)
    h = jax.nn.silu(x @ head["w1"] + head["b1"])
    return (h @ head["w2"] + head["b2"])[..., 0]


def fake_loss(fake_logits: Array) -> Array:
    """The discriminator's cross-entropy on samples it must call fake: -log(1 - D(x))."""
    return jnp.mean(jax.nn.softplus(fake_logits))


def critic_loss(real_logits: Array, fake_logits: Array) -> Array:
    """Binary cross-entropy of the discriminator: -log D(real) - log(1 - D(fake))."""
    return jnp.mean(jax.nn.softplus(-real_logits)) + fake_loss(fake_logits)


def generator_loss(fake_logits: Array) -> Array:
    """The non-saturating generator loss -log D(fake)."""
    return jnp.mean(jax.nn.softplus(-fake_logits))
