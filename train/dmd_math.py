"""The DMD2 quantities for rectified flow, as pure functions (shared_docs dmd_notes sections 2, 4).

Everything is written for a general *endpoint* noise level `tau`: the generator of a stage maps
its input to the latent at `tau` (tau = 0: the clean sample x0; tau = sigma_b: the phased
high-noise stage's hand-over latent). The forward process from the endpoint to sigma is the
rectified-flow bridge x_sigma = alpha x_tau + beta eps, alpha = (1-sigma)/(1-tau),
beta^2 = sigma^2 - alpha^2 tau^2; with tau = 0 every formula reduces to the usual one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

F32 = jnp.float32


def _b(s: Array, x: Array) -> Array:
    """Broadcasts a per-sample scalar `[B]` (or a scalar) against `x [B, ...]`."""
    s = jnp.asarray(s, F32)
    return s.reshape(s.shape + (1,) * (x.ndim - s.ndim)) if s.ndim else s


def bridge_coefficients(sigma: Array, tau: Array) -> tuple[Array, Array]:
    """(alpha, beta) of q(x_sigma | x_tau)."""
    sigma, tau = jnp.asarray(sigma, F32), jnp.asarray(tau, F32)
    alpha = (1.0 - sigma) / (1.0 - tau)
    beta = jnp.sqrt(jnp.maximum(sigma**2 - (alpha * tau) ** 2, 0.0))
    return alpha, beta


def noise_to(x_tau: Float[Array, "b ..."], tau, sigma, eps: Float[Array, "b ..."]) -> Array:
    """Samples x_sigma from the endpoint latent x_tau (tau <= sigma)."""
    alpha, beta = bridge_coefficients(sigma, tau)
    return _b(alpha, x_tau) * x_tau.astype(F32) + _b(beta, x_tau) * eps.astype(F32)


def generator_endpoint(x: Array, sigma, tau, v: Array) -> Array:
    """The generator's output: the flow ODE jump x - (sigma - tau) v (x0 = x - sigma v at tau 0)."""
    return x.astype(F32) - _b(jnp.asarray(sigma, F32) - tau, x) * v.astype(F32)


def tweedie_endpoint(x_t: Array, sigma, tau, v: Array) -> Array:
    """E[x_tau | x_t] under a model whose velocity at (x_t, sigma) is v.

    Score from velocity: grad log p = -(x_t + (1 - sigma) v) / sigma; Tweedie for the bridge
    kernel N(alpha x_tau, beta^2): E[x_tau | x_t] = (x_t + beta^2 score) / alpha. With tau = 0
    this is x_t - sigma v.
    """
    sigma = jnp.asarray(sigma, F32)
    alpha, beta = bridge_coefficients(sigma, tau)
    b2 = beta**2
    num = _b(sigma - b2, x_t) * x_t.astype(F32) - _b((1.0 - sigma) * b2, x_t) * v.astype(F32)
    return num / _b(sigma * alpha, x_t)


def velocity_target(x_t: Array, x_tau: Array, sigma, tau) -> Array:
    """The velocity whose Tweedie endpoint is exactly x_tau: the critic's regression target.

    With tau = 0 it is (x_t - x0) / sigma = eps - x0, the flow-matching target.
    """
    sigma = jnp.asarray(sigma, F32)
    alpha, beta = bridge_coefficients(sigma, tau)
    b2 = beta**2
    num = _b(sigma - b2, x_t) * x_t.astype(F32) - _b(sigma * alpha, x_t) * x_tau.astype(F32)
    return num / _b((1.0 - sigma) * b2, x_t)


def cfg_velocity(v_cond: Array, v_uncond: Array, scale) -> Array:
    """Standard classifier-free guidance v_u + w (v_c - v_u) (Wan / DMD2 convention)."""
    return v_uncond + scale * (v_cond - v_uncond)


def dmd_gradient(
    x_gen: Float[Array, "b ..."], x_fake: Float[Array, "b ..."], x_real: Float[Array, "b ..."],
    eps: float = 1e-6,
) -> Float[Array, "b ..."]:
    """g = (x_fake - x_real) / mean|x_gen - x_real|, the normaliser per sample (DMD eq. 7-8)."""
    axes = tuple(range(1, x_gen.ndim))
    norm = jnp.mean(jnp.abs(x_gen - x_real), axis=axes, keepdims=True)
    return jnp.nan_to_num((x_fake - x_real) / (norm + eps))


def dmd_surrogate_loss(x_gen: Array, grad: Array) -> Array:
    """0.5 mean((x - sg(x - g))^2): its gradient w.r.t. x is g / numel."""
    target = jax.lax.stop_gradient(x_gen - grad)
    return 0.5 * jnp.mean((x_gen - target) ** 2)


def critic_loss(v_pred: Array, x_t: Array, x_tau: Array, sigma, tau) -> Array:
    """Flow matching on the generator's samples, in endpoint space: the critic's Tweedie mean of
    x_tau regressed onto x_tau, weighted 1 / sigma^2.

    At tau = 0 this is exactly the velocity loss mean((v - (eps - x0))^2). For tau > 0 (phased
    stage 1) a velocity loss against `velocity_target` would weight the endpoint error by
    (sigma alpha / ((1 - sigma) beta^2))^2, about 100x at sigma = 0.9 and more towards both ends of
    the stage's range; here the weight stays within [1, 1 / sigma_min^2] (dmd_notes section 4:
    regress the bridge Tweedie mean onto x_b)."""
    pred = tweedie_endpoint(x_t, sigma, tau, v_pred)
    err = (pred - jax.lax.stop_gradient(x_tau.astype(F32))) / _b(sigma, pred)
    return jnp.mean(err**2)
