"""The denoising loop: dual-expert routing, classifier-free guidance and a solver, jitted whole.

The schedule is static, so the expert switch is a static split of the steps: one `fori_loop` over
the high-noise steps with the high expert, one over the rest with the low expert, and the solver
state carried across unchanged. The function compiles once per (latent shape, context length,
config) and is reused across prompts and seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from wanjax.sampling.schedules import (
    Schedule,
    dpmpp_flow_schedule,
    few_step_schedule,
    flow_schedule,
)
from wanjax.sampling.solvers import get_solver

CfgMode = Literal["batched", "two_pass"]


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """How to sample. Defaults are the official A14B settings (40 UniPC steps, shift 12,
    guidance 4.0 high / 3.0 low, boundary 0.875). A few-step student sets `timesteps` (raw values
    warped through `shift`, e.g. (1000, 750, 500, 250)) with solver 'x0_renoise' and guidance 1."""

    num_steps: int = 40
    shift: float = 12.0
    solver: str = "unipc"
    guide_high: float = 4.0
    guide_low: float = 3.0
    boundary: float = 0.875
    cfg_mode: CfgMode = "batched"
    timesteps: tuple[float, ...] | None = None
    phased: bool = False

    def __post_init__(self):
        get_solver(self.solver)  # validates the name
        if self.cfg_mode not in ("batched", "two_pass"):
            raise ValueError(f"cfg_mode must be 'batched' or 'two_pass', got {self.cfg_mode!r}")
        if not 0.0 <= self.boundary <= 1.0:
            raise ValueError(f"boundary must be in [0, 1], got {self.boundary}")
        if self.timesteps is None and self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.phased and self.solver != "x0_renoise":
            raise ValueError("phased students sample with solver 'x0_renoise'")

    def schedule(self) -> Schedule:
        if self.timesteps is not None:
            return few_step_schedule(self.timesteps, self.shift)
        if self.solver == "dpm++":
            return dpmpp_flow_schedule(self.num_steps, self.shift)
        return flow_schedule(self.num_steps, self.shift)

    def renoise_targets(self) -> np.ndarray:
        """Per-step endpoints of the 'x0_renoise' solver: 0 (x0) everywhere, except that a phased
        student's high-noise steps aim at sigma_b, the noise level of the first low-noise step
        (dmd_notes section 4), and hand that latent over unchanged."""
        sigmas = np.asarray(self.schedule().sigmas, np.float32)
        n = len(sigmas) - 1
        targets = np.zeros((n,), np.float32)
        n_high = self.num_high_steps()
        if self.phased and 0 < n_high < n:
            targets[:n_high] = sigmas[n_high]
        return targets

    def num_high_steps(self) -> int:
        """Steps owned by the high-noise expert (`t >= boundary * 1000`): 26 of 40 for A14B."""
        return int(np.sum(np.asarray(self.schedule().timesteps) >= self.boundary * 1000.0))


ModelFn = Callable[[Any, Array, Array, Array], Array]


def guided_velocity(
    apply: ModelFn,
    params: Any,
    x: Float[Array, "b c f h w"],
    t: Array,
    context: Float[Array, "b l d"],
    negative: Float[Array, "b l d"] | None,
    scale: float,
    mode: CfgMode,
) -> Float[Array, "b c f h w"]:
    """`v_u + g (v_c - v_u)` in float32 (official CFG); plain conditional velocity when g == 1."""
    tb = jnp.full((x.shape[0],), t, jnp.float32)
    if negative is None or scale == 1.0:
        return apply(params, x, tb, context)
    if mode == "batched":
        v = apply(params, jnp.concatenate([x, x]), jnp.concatenate([tb, tb]),
                  jnp.concatenate([context, negative]))
        v_cond, v_uncond = jnp.split(v, 2)
    else:
        v_cond = apply(params, x, tb, context)
        v_uncond = apply(params, x, tb, negative)
    return v_uncond + scale * (v_cond - v_uncond)


def _pad_to(ctx: Array, length: int) -> Array:
    return jnp.pad(ctx, ((0, 0), (0, length - ctx.shape[1]), (0, 0)))


def make_phase(apply: ModelFn, cfg: SampleConfig, expert: str) -> Callable:
    """One expert's share of the loop: `(params, state, context, negative) -> state`."""
    sched = cfg.schedule()
    timesteps = jnp.asarray(np.asarray(sched.timesteps, np.float32))
    n_high = cfg.num_high_steps()
    start, stop = (0, n_high) if expert == "high" else (n_high, len(timesteps))
    scale = cfg.guide_high if expert == "high" else cfg.guide_low
    solver = get_solver(cfg.solver)

    def phase(params, state, context, negative):
        def body(i, state):
            v = guided_velocity(
                apply, params, state.x, timesteps[i], context, negative, scale, cfg.cfg_mode
            )
            return solver.step(state, i, v)

        return jax.lax.fori_loop(start, stop, body, state)

    return phase


def dit_apply(graphdef: nnx.GraphDef) -> ModelFn:
    """`apply(params, x, t, ctx)` for a split `WanDiT`."""

    def apply(params, x, t, ctx):
        return nnx.merge(graphdef, params)(x, t, ctx)

    return apply


def dit_apply_features(graphdef: nnx.GraphDef) -> Callable[..., tuple[Array, Array]]:
    """`apply(params, x, t, ctx) -> (velocity, last-block tokens [B, L, D])`."""

    def apply(params, x, t, ctx):
        return nnx.merge(graphdef, params)(x, t, ctx, return_features=True)

    return apply


def make_sampler(
    apply_high: ModelFn, apply_low: ModelFn, cfg: SampleConfig
) -> Callable[..., Array]:
    """Returns jitted `sample(params_high, params_low, noise, context, negative, key) -> x0`.

    `context`/`negative` are `[B, L, text_dim]` (zero-padded rows allowed); `key` feeds the
    fresh noise of the 'x0_renoise' student solver and is ignored by the others. Both experts
    stay resident; see `make_swapping_sampler` for the offloading variant.
    """
    high, low = make_phase(apply_high, cfg, "high"), make_phase(apply_low, cfg, "low")
    init = _initialiser(cfg)

    @jax.jit
    def sample(params_high, params_low, noise, context, negative, key):
        context, negative = _same_length(context, negative)
        state = init(noise, key)
        state = high(params_high, state, context, negative)
        state = low(params_low, state, context, negative)
        return state.x

    return sample


def make_swapping_sampler(
    apply_high: ModelFn, apply_low: ModelFn, cfg: SampleConfig, host_sharding, device_sharding
) -> Callable[..., Array]:
    """Only the active expert on the accelerator: the low expert is moved in (and the high one
    out to `host_sharding`) at the boundary, as the official `offload_model` does."""
    high = jax.jit(make_phase(apply_high, cfg, "high"))
    low = jax.jit(make_phase(apply_low, cfg, "low"))
    init = jax.jit(_initialiser(cfg))

    def sample(params_high, params_low, noise, context, negative, key):
        context, negative = _same_length(context, negative)
        state = init(noise, key)
        state = high(jax.device_put(params_high, device_sharding), state, context, negative)
        params_high = jax.device_put(params_high, host_sharding)
        state = low(jax.device_put(params_low, device_sharding), state, context, negative)
        return state.x

    return sample


def _same_length(context, negative):
    if negative is None:
        return context, None
    length = max(context.shape[1], negative.shape[1])
    return _pad_to(context, length), _pad_to(negative, length)


def _initialiser(cfg: SampleConfig):
    sigmas = np.asarray(cfg.schedule().sigmas)
    targets = cfg.renoise_targets() if cfg.solver == "x0_renoise" else None
    solver = get_solver(cfg.solver)

    def init(noise, key):
        if targets is not None:
            return solver.init(noise.astype(jnp.float32), sigmas, key=key, targets=targets)
        return solver.init(noise.astype(jnp.float32), sigmas)

    return init
