"""Train state and the two jitted updates (generator, critic) of one DMD stage."""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array

from train.dmd_config import DMDConfig
from train.dmd_losses import StageSetup, critic_loss, generator_loss


@flax.struct.dataclass
class TrainState:
    """Everything that changes during a stage; checkpointed and restored as one pytree."""

    gen: Any
    critic: Any
    ema: Any
    gen_opt: Any
    critic_opt: Any
    step: Array  # critic iterations done
    gen_updates: Array
    key: Array
    disc: Any = None  # the GAN head on the critic's tokens (train/gan.py); None when off
    disc_opt: Any = None


def make_optimizer(cfg: DMDConfig, lr: float) -> optax.GradientTransformation:
    opt = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
    )
    return optax.MultiSteps(opt, cfg.grad_accum) if cfg.grad_accum > 1 else opt


def init_state(cfg: DMDConfig, gen, critic, key, disc=None) -> TrainState:
    """Student and critic both start from the teacher's weights (DMD2); fp32 master copies.
    `disc`: a fresh GAN head (`gan.init_head`) when the GAN term is on."""
    # Fresh float32 copies: the three trees are donated separately, so they must not alias.
    f32 = functools.partial(jax.tree.map, lambda x: jnp.array(x, jnp.float32, copy=True))
    gen, critic, ema = f32(gen), f32(critic), f32(gen)
    return TrainState(
        gen=gen, critic=critic, ema=ema,
        gen_opt=_init_opt(make_optimizer(cfg, cfg.lr_gen), gen),
        critic_opt=_init_opt(make_optimizer(cfg, cfg.lr_critic), critic),
        step=jnp.zeros((), jnp.int32), gen_updates=jnp.zeros((), jnp.int32), key=key,
        disc=disc, disc_opt=None if disc is None else make_optimizer(cfg, cfg.gan_lr).init(disc),
    )


def _is_expert_dict(tree) -> bool:
    return isinstance(tree, dict) and set(tree) == {"high", "low"}


def _global_norm(tree) -> Array:
    return optax.global_norm(tree)


def _update(opt, grads, opt_state, params):
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def _where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _init_opt(opt, params):
    """One optimizer state per expert in joint mode (each expert is stepped on its own)."""
    if _is_expert_dict(params):
        return {n: opt.init(params[n]) for n in ("high", "low")}
    return opt.init(params)


def make_steps(cfg: DMDConfig, setup: StageSetup, apply_train, apply_real, latent_shape,
               apply_feats=None):
    """Returns jitted `gen_step(state, frozen, batch, pairs=None)` and `critic_step(state,
    frozen, batch, real=None)`.

    `frozen = (real_params, frozen_gen_params_or_None)`; `batch = (ctx, neg)`, each
    `[B, L, text_dim]`; `pairs = (ode_x [B, K+1, ...], ode_ctx)`: teacher ODE pairs for the
    regression term; `real = (x_tau [B, ...], ctx)`: the GAN term's real samples, the ODE
    states at the stage's endpoint (`setup.endpoint_index`). `apply_feats`: the
    critic's `(velocity, tokens)` forward, needed by the GAN term. Noise and noise levels come
    from `state.key` folded with the step, so a run is a pure function of its seed and data:
    resuming reproduces it exactly.
    """

    def keys(state, role: int):
        key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), role)
        noise_key, loss_key = jax.random.split(key)
        return noise_key, loss_key

    def student_noise(key, batch):
        return jax.random.normal(key, (batch, *latent_shape), jnp.float32)
    gen_opt = make_optimizer(cfg, cfg.lr_gen)
    critic_opt = make_optimizer(cfg, cfg.lr_critic)

    def gen_step(state: TrainState, frozen, batch, pairs=None):
        real, frozen_gen = frozen
        ctx, neg = batch
        noise_key, key = keys(state, 0)
        noise = student_noise(noise_key, ctx.shape[0])

        def loss_fn(gen):
            return generator_loss(gen, state.critic, real, frozen_gen, apply_train, apply_real,
                                  setup, noise, ctx, neg, key, pairs, state.disc, apply_feats)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.gen)
        if _is_expert_dict(state.gen):
            # Joint mode: step only the expert that produced the differentiated sample.
            used_high = metrics["exit_step"] < setup.n_high
            gen, opt_state = {}, {}
            for name, used in (("high", used_high), ("low", ~used_high)):
                new_p, new_o = _update(gen_opt, grads[name], state.gen_opt[name], state.gen[name])
                gen[name] = _where(used, new_p, state.gen[name])
                opt_state[name] = _where(used, new_o, state.gen_opt[name])
        else:
            gen, opt_state = _update(gen_opt, grads, state.gen_opt, state.gen)
        decay = jnp.where(state.gen_updates < cfg.ema_start, 0.0, cfg.ema_decay)
        ema = jax.tree.map(lambda e, g: decay * e + (1.0 - decay) * g, state.ema, gen)
        metrics = metrics | {"gen_grad_norm": _global_norm(grads)}
        state = state.replace(gen=gen, gen_opt=opt_state, ema=ema,
                              gen_updates=state.gen_updates + 1)
        return state, metrics

    disc_opt = make_optimizer(cfg, cfg.gan_lr)

    def critic_step(state: TrainState, frozen, batch, real=None):
        _, frozen_gen = frozen
        ctx, _ = batch
        noise_key, key = keys(state, 1)
        noise = student_noise(noise_key, ctx.shape[0])

        def loss_fn(critic, disc):
            return critic_loss(critic, state.gen, frozen_gen, apply_train, setup, noise, ctx, key,
                               real, disc, apply_feats)

        (loss, metrics), (grads, disc_grads) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(state.critic, state.disc)
        if _is_expert_dict(state.critic):
            updated = {n: _update(critic_opt, grads[n], state.critic_opt[n], state.critic[n])
                       for n in ("high", "low")}
            critic = {n: p for n, (p, _) in updated.items()}
            opt_state = {n: o for n, (_, o) in updated.items()}
        else:
            critic, opt_state = _update(critic_opt, grads, state.critic_opt, state.critic)
        metrics = metrics | {"critic_grad_norm": _global_norm(grads)}
        state = state.replace(critic=critic, critic_opt=opt_state, step=state.step + 1)
        if state.disc is not None:
            disc, d_opt = _update(disc_opt, disc_grads, state.disc_opt, state.disc)
            state = state.replace(disc=disc, disc_opt=d_opt)
        return state, metrics

    return (jax.jit(gen_step, donate_argnums=0), jax.jit(critic_step, donate_argnums=0))
