"""Generator (distribution matching) and critic (flow matching) losses for one training stage.

Networks are passed as `apply(params, x, t, ctx) -> v`. Per stage:
- `gen`: the student expert(s) being trained; `critic`: the fake score; `real`: the frozen teacher
  (with CFG); `frozen_gen`: the stage-1 student feeding the phased low-noise stage (or None).
In joint mode each of them is a dict {'high', 'low'} routed per noise level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from train import dmd_math, gan
from train.rollout import exit_step, init_state, run_steps
from train.stages import Stage, shift_raw, unshift

Apply = Callable[..., Array]


@dataclasses.dataclass(frozen=True)
class StageSetup:
    """Static facts a stage's losses need (all plain numbers, closed over by the jitted steps)."""

    stage: Stage
    sigmas: np.ndarray  # student grid, K + 1 values
    targets: np.ndarray  # per-step renoise endpoints (phased: sigma_b on high steps)
    n_high: int  # student steps owned by the high expert
    shift: float  # of the noise-level draws (DMDConfig.loss_shift)
    boundary: float
    guidance_high: float
    guidance_low: float
    regression_weight: float = 0.0
    gan_weight: float = 0.0  # generator side of the GAN term (0: off)
    gan_critic_weight: float = 0.0  # critic side
    gan_shift: float | None = None  # the GAN term's own noise-level draws (None: the DMD's)
    gan_reversed_weight: float = 0.0  # time-reversed real samples as extra fakes (critic side)

    @property
    def gan(self) -> bool:
        return self.gan_weight > 0.0

    @property
    def gan_reversed(self) -> bool:
        """Whether the discriminator also sees real samples played backwards (batch 3B)."""
        return self.gan_reversed_weight > 0.0

    @property
    def gan_apart(self) -> bool:
        """Whether the GAN term draws its own noise levels (a second critic pass)."""
        return self.gan and self.gan_shift is not None

    def gan_draws(self) -> StageSetup:
        """The setup whose `sample_noise_level` gives the GAN term's noise levels: the stage's
        sigma range, warped by `gan_shift`."""
        assert self.gan_shift is not None
        return dataclasses.replace(self, stage=self.stage.reshifted(self.shift, self.gan_shift),
                                   shift=self.gan_shift)

    @property
    def endpoint_index(self) -> int:
        """Index into the student grid of the stage's endpoint noise level (tau)."""
        n = len(self.sigmas) - 1
        return self.n_high if self.stage.tau > 0.0 else n


def route(apply: Apply, params, x, t, ctx, boundary: float, side=None):
    """Applies the expert owning each sample's t to a dict {'high','low'} of params; a single
    params tree is applied as is. With `side` (a traced bool: the whole batch is high-noise)
    only that expert runs (`lax.cond`); without it both run and each sample takes its own."""
    if not (isinstance(params, dict) and set(params) == {"high", "low"}):
        return apply(params, x, t, ctx)
    if side is not None:
        return jax.lax.cond(side, lambda: apply(params["high"], x, t, ctx),
                            lambda: apply(params["low"], x, t, ctx))
    high = t >= boundary * 1000.0

    def pick(a, b):  # outputs may be a tuple (velocity, tokens) of different ranks
        return jnp.where(high.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, apply(params["high"], x, t, ctx), apply(params["low"], x, t, ctx))


def _step_model(apply: Apply, gen, frozen_gen, setup: StageSetup, ctx):
    """The generator as the sampler sees it at step i (frozen stage-1 params before the stage)."""

    def model(x, t, i):
        if isinstance(gen, dict) and set(gen) == {"high", "low"}:
            return jax.lax.cond(i < setup.n_high, lambda: apply(gen["high"], x, t, ctx),
                                lambda: apply(gen["low"], x, t, ctx))
        if frozen_gen is None:
            return apply(gen, x, t, ctx)
        return jax.lax.cond(i < setup.stage.first, lambda: apply(frozen_gen, x, t, ctx),
                            lambda: apply(gen, x, t, ctx))

    return model


def generate(apply: Apply, gen, frozen_gen, setup: StageSetup, noise, ctx, key):
    """Backward simulation: the sampler's steps before a random exit step (no gradient), then
    the exit step's endpoint prediction (with gradient w.r.t. `gen`). Returns (x_gen, k)."""
    k_exit_key, roll_key = jax.random.split(key)
    st = setup.stage
    k = exit_step(k_exit_key, st.first, st.stop)
    model = _step_model(apply, jax.lax.stop_gradient(gen), frozen_gen, setup, ctx)
    state = init_state(noise, jnp.asarray(setup.sigmas), jnp.asarray(setup.targets), roll_key)
    state = run_steps(model, state, 0, k)
    return step_endpoint(apply, gen, frozen_gen, setup, jax.lax.stop_gradient(state.x), ctx, k), k


def step_endpoint(apply: Apply, gen, frozen_gen, setup: StageSetup, x_k, ctx, k):
    """The student's step k from input x_k (at sigma_k) to the stage's endpoint tau: the
    sampler's own target for the step, except where the stage scores the x0 of a step whose
    sampler target is the hand-over latent (handover 'x0_bridge': tau 0, target sigma_b)."""
    sigma_k = jnp.asarray(setup.sigmas)[k]
    t = jnp.full((x_k.shape[0],), sigma_k * 1000.0, jnp.float32)
    v = _step_model(apply, gen, frozen_gen, setup, ctx)(x_k, t, k)
    return dmd_math.generator_endpoint(x_k, sigma_k, setup.stage.tau, v)


def regression_loss(apply: Apply, gen, frozen_gen, setup: StageSetup, ode_x, ctx, k):
    """Teacher-ODE regression at step k: the student fed the ODE's state at sigma_k must reach
    the ODE's state at the stage's endpoint. `ode_x [B, K+1, ...]`: ODE states at the grid."""
    x_k = jax.lax.dynamic_index_in_dim(ode_x, k, axis=1, keepdims=False)
    pred = step_endpoint(apply, gen, frozen_gen, setup, x_k, ctx, k)
    return jnp.mean((pred - ode_x[:, setup.endpoint_index]) ** 2)


def sample_noise_level(setup: StageSetup, key, batch: int):
    """`(sigma [B], side)`: sigma = shift(u), u ~ U(raw_lo, raw_hi) per sample.

    Where the stage's range crosses the expert boundary, the batch first draws its side (high
    with probability = the high part's share of the u-range, `side` a traced bool), then u
    uniformly within that side: each sample's marginal is unchanged, and one expert scores the
    whole batch instead of both scoring every sample. Elsewhere `side` is None."""
    st = setup.stage
    if not st.crosses(setup.boundary, setup.shift):
        u = jax.random.uniform(key, (batch,), jnp.float32, st.raw_lo, st.raw_hi)
        return shift_raw(u, setup.shift), None
    side_key, u_key = jax.random.split(key)
    u_b = unshift(setup.boundary, setup.shift)
    side = jax.random.uniform(side_key) < (st.raw_hi - u_b) / (st.raw_hi - st.raw_lo)
    lo = jnp.where(side, u_b, st.raw_lo)
    hi = jnp.where(side, st.raw_hi, u_b)
    sigma = shift_raw(jax.random.uniform(u_key, (batch,), jnp.float32) * (hi - lo) + lo,
                      setup.shift)
    # t >= boundary * 1000 is the high expert's, exactly as `route` and the sampler decide
    edge = jnp.float32(setup.boundary)
    below = jnp.nextafter(edge, jnp.float32(0.0))
    sigma = jnp.where(side, jnp.maximum(sigma, edge), jnp.minimum(sigma, below))
    return sigma, side


def _gan_noised(setup: StageSetup, key, *xs):
    """`(*xs noised to the GAN term's own levels, t [B], side)`: one draw of sigma shared by
    every array in `xs`, fresh noise for each."""
    level_key, eps_key = jax.random.split(key)
    sigma, side = sample_noise_level(setup.gan_draws(), level_key, xs[0].shape[0])
    tau = setup.stage.tau
    noised = [dmd_math.noise_to(x, tau, sigma, jax.random.normal(k, x.shape, jnp.float32))
              for x, k in zip(xs, jax.random.split(eps_key, len(xs)), strict=True)]
    return *noised, sigma * 1000.0, side


def _guidance(setup: StageSetup, sigma):
    """The CFG scale of the expert that owns each sample's noise level."""
    return jnp.where(sigma * 1000.0 >= setup.boundary * 1000.0, setup.guidance_high,
                     setup.guidance_low).reshape((-1, 1, 1, 1, 1))


def generator_loss(gen, critic, real, frozen_gen, apply_train: Apply, apply_real: Apply,
                   setup: StageSetup, noise, ctx, neg, key, pairs=None, disc=None,
                   apply_feats: Apply | None = None):
    """DMD loss (+ the regression term on teacher ODE pairs `(ode_x, ode_ctx)` when given and
    its weight is > 0, + the GAN term when `disc` is given); returns (loss, metrics). Gradient
    flows into `gen` only."""
    gen_key, t_key, eps_key = jax.random.split(key, 3)
    x_gen, k = generate(apply_train, gen, frozen_gen, setup, noise, ctx, gen_key)
    tau = setup.stage.tau
    b = x_gen.shape[0]
    sigma, side = sample_noise_level(setup, t_key, b)
    eps = jax.random.normal(eps_key, x_gen.shape, jnp.float32)
    use_gan = disc is not None and setup.gan
    # with the GAN term on the DMD's noise levels the critic's one pass also sees x_t with its
    # gradient path back to the generator; with its own levels the GAN makes a second pass
    shared = use_gan and not setup.gan_apart
    x_t = dmd_math.noise_to(x_gen if shared else jax.lax.stop_gradient(x_gen), tau, sigma, eps)
    t = sigma * 1000.0
    x_t_sg = jax.lax.stop_gradient(x_t)
    both = route(apply_real, real, jnp.concatenate([x_t_sg, x_t_sg]), jnp.concatenate([t, t]),
                 jnp.concatenate([ctx, neg]), setup.boundary, side)
    v_cond, v_uncond = jnp.split(both, 2)
    v_real = dmd_math.cfg_velocity(v_cond, v_uncond, _guidance(setup, sigma))
    if shared:
        v_fake, tokens = route(apply_feats, critic, x_t, t, ctx, setup.boundary, side)
        v_fake = jax.lax.stop_gradient(v_fake)
    else:
        v_fake = route(apply_train, critic, x_t, t, ctx, setup.boundary, side)
    if use_gan and setup.gan_apart:
        x_g, t_g, side_g = _gan_noised(setup, jax.random.fold_in(key, 1), x_gen)
        _, tokens = route(apply_feats, critic, x_g, t_g, ctx, setup.boundary, side_g)
    x_real = dmd_math.tweedie_endpoint(x_t_sg, sigma, tau, v_real)
    x_fake = dmd_math.tweedie_endpoint(x_t_sg, sigma, tau, v_fake)
    grad = jax.lax.stop_gradient(dmd_math.dmd_gradient(jax.lax.stop_gradient(x_gen), x_fake, x_real))
    loss = dmd_math.dmd_surrogate_loss(x_gen, grad)
    metrics = {"dmd_loss": loss, "dmd_grad_norm": jnp.sqrt(jnp.mean(grad**2)), "exit_step": k}
    if pairs is not None and setup.regression_weight > 0.0:
        # the same step k as the DMD term (joint mode steps only the expert owning it)
        reg = regression_loss(apply_train, gen, frozen_gen, setup, *pairs, k)
        loss = loss + setup.regression_weight * reg
        metrics["regression_loss"] = reg
    if use_gan:
        g = gan.generator_loss(gan.logits(disc, tokens))
        loss = loss + setup.gan_weight * g
        metrics["gan_gen_loss"] = g
    return loss, metrics | {"gen_loss": loss}


def critic_loss(critic, gen, frozen_gen, apply_train: Apply, setup: StageSetup, noise, ctx, key,
                real_batch=None, disc=None, apply_feats: Apply | None = None):
    """Flow-matching loss of the critic on detached generator samples (+ the GAN discriminator
    loss against `real_batch = (x_tau [B, ...], ctx)` when `disc` is given); returns (loss,
    metrics). Differentiable in `critic` and `disc`."""
    gen_key, t_key, eps_key = jax.random.split(key, 3)
    x_gen, _ = generate(apply_train, jax.lax.stop_gradient(gen), frozen_gen, setup, noise, ctx,
                        gen_key)
    x_gen = jax.lax.stop_gradient(x_gen)
    tau = setup.stage.tau
    b = x_gen.shape[0]
    sigma, side = sample_noise_level(setup, t_key, b)
    eps = jax.random.normal(eps_key, x_gen.shape, jnp.float32)
    x_t = dmd_math.noise_to(x_gen, tau, sigma, eps)
    use_gan = disc is not None and setup.gan
    if not use_gan or setup.gan_apart:  # flow matching in a pass of its own
        v = route(apply_train, critic, x_t, sigma * 1000.0, ctx, setup.boundary, side)
        flow = dmd_math.critic_loss(v, x_t, x_gen, sigma, tau)
        if not use_gan:
            return flow, {"critic_loss": flow}
        # the GAN at its own levels
        real_x, real_ctx = real_batch
        fake_g, real_g, t_g, side_g = _gan_noised(setup, jax.random.fold_in(key, 1), x_gen, real_x)
        _, tokens = _discriminator_pass(apply_feats, critic, setup, fake_g, real_g, t_g, ctx,
                                        real_ctx, side_g)
        return _with_discriminator(flow, disc, tokens, setup)
    # one batch of 2B (3B): generated then real (then reversed), all noised to the same levels
    real_x, real_ctx = real_batch
    real_eps = jax.random.normal(jax.random.fold_in(eps_key, 1), x_gen.shape, jnp.float32)
    real_t = dmd_math.noise_to(real_x, tau, sigma, real_eps)
    v, tokens = _discriminator_pass(apply_feats, critic, setup, x_t, real_t, sigma * 1000.0, ctx,
                                    real_ctx, side)
    flow = dmd_math.critic_loss(v[:b], x_t, x_gen, sigma, tau)
    return _with_discriminator(flow, disc, tokens, setup)


def reversed_frames(x: Array) -> Array:
    """A `[B, C, F, H, W]` batch played backwards (for a Wan latent only approximately the
    reversed video's latent: its first frame stands for one video frame, the others for four)."""
    return jnp.flip(x, axis=2)


def _discriminator_pass(apply_feats: Apply, critic, setup: StageSetup, fake_t, real_t, t, ctx,
                        real_ctx, side):
    """One critic pass with features over generated, real and (with `gan_reversed_weight`) the
    real samples played backwards, with the real prompts: `(v, tokens)`, batch 2B or 3B. The
    noised real samples are reversed as they are (their noise reversed with them: still iid)."""
    xs, ts, ctxs = [fake_t, real_t], [t, t], [ctx, real_ctx]
    if setup.gan_reversed:
        xs, ts, ctxs = xs + [reversed_frames(real_t)], ts + [t], ctxs + [real_ctx]
    return route(apply_feats, critic, jnp.concatenate(xs), jnp.concatenate(ts),
                 jnp.concatenate(ctxs), setup.boundary, side)


def _with_discriminator(flow, disc, tokens, setup: StageSetup):
    """The critic's loss and metrics: flow matching + the GAN discriminator's BCE on `tokens`
    (generated samples' first, then real ones', then the reversed real ones' if any)."""
    fake_logits, real_logits, *rest = jnp.split(gan.logits(disc, tokens),
                                                3 if setup.gan_reversed else 2)
    d = gan.critic_loss(real_logits, fake_logits)
    metrics = {"gan_real_acc": jnp.mean(real_logits > 0), "gan_fake_acc": jnp.mean(fake_logits < 0)}
    if setup.gan_reversed:
        (reversed_logits,) = rest
        d = d + setup.gan_reversed_weight * gan.fake_loss(reversed_logits)
        metrics["gan_reversed_acc"] = jnp.mean(reversed_logits < 0)
    loss = flow + setup.gan_critic_weight * d
    return loss, {"critic_loss": flow, "gan_critic_loss": d} | metrics
