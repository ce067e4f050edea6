"""Step-by-step sampling that exposes every step: the state each expert sees and its velocity.

`make_sampler` (wanjax.sampling.loop) runs the whole loop under one jit and returns only x0.
Calibration and evaluation need each step's input and output, so this drives the *same*
transitions from Python: the routing (`SampleConfig.num_high_steps`, the first steps go to the
high-noise expert, as `make_phase` splits them), the guidance (`guided_velocity`), the solver
(`get_solver(cfg.solver)` with `cfg.renoise_targets()` and the same key for 'x0_renoise'). With
the same noise and key the final sample equals `make_sampler`'s (tests/calibrate).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wanjax.models.dit import WanDiT
from wanjax.sampling.loop import SampleConfig, guided_velocity
from wanjax.sampling.solvers import get_solver

EXPERTS = ("high", "low")

# velocity(expert, step, x, t) -> v  (guidance included)
VelocityFn = Callable[[str, int, jax.Array, float], jax.Array]


@dataclasses.dataclass
class Trajectory:
    """One rollout: `xs[i]` is what step i's model saw at `timesteps[i]`, `vs[i]` its (guided)
    velocity, `experts[i]` the expert that owned step i, `final` the sample."""

    timesteps: np.ndarray
    experts: list[str]
    xs: list[jax.Array]
    vs: list[jax.Array]
    final: jax.Array


def step_experts(cfg: SampleConfig) -> list[str]:
    """The expert of every step, split exactly as `wanjax.sampling.loop.make_phase` splits."""
    n = len(np.asarray(cfg.schedule().timesteps))
    n_high = cfg.num_high_steps()
    return ["high" if i < n_high else "low" for i in range(n)]


def guidance(cfg: SampleConfig, expert: str) -> float:
    return cfg.guide_high if expert == "high" else cfg.guide_low


def _solver_init(cfg: SampleConfig, noise: jax.Array, key: jax.Array):
    sigmas = np.asarray(cfg.schedule().sigmas)
    solver = get_solver(cfg.solver)
    if cfg.solver == "x0_renoise":
        return solver.init(noise.astype(jnp.float32), sigmas, key=key,
                           targets=cfg.renoise_targets())
    return solver.init(noise.astype(jnp.float32), sigmas)


_STEP_CACHE: dict[str, Callable] = {}


def _solver_step(name: str) -> Callable:
    if name not in _STEP_CACHE:
        _STEP_CACHE[name] = jax.jit(get_solver(name).step)
    return _STEP_CACHE[name]


def run_trajectory(
    velocity: VelocityFn,
    cfg: SampleConfig,
    noise: jax.Array,
    key: jax.Array,
    *,
    keep: bool = True,
    on_step: Callable[[int, str, jax.Array, float, jax.Array], None] | None = None,
) -> Trajectory:
    """Roll `cfg`'s grid from `noise`; `on_step(i, expert, x, t, v)` sees each step.

    `keep=False` drops the per-step states (only `final` and the velocities' count remain).
    """
    timesteps = np.asarray(cfg.schedule().timesteps, np.float32)
    experts = step_experts(cfg)
    state = _solver_init(cfg, noise, key)
    step = _solver_step(cfg.solver)
    xs, vs = [], []
    for i, (t, expert) in enumerate(zip(timesteps, experts, strict=True)):
        v = velocity(expert, i, state.x, float(t))
        if on_step is not None:
            on_step(i, expert, state.x, float(t), v)
        if keep:
            xs.append(state.x)
            vs.append(v)
        state = step(state, i, v)
    return Trajectory(timesteps, experts, xs, vs, state.x)


class ExpertRunner:
    """Jitted guided velocity of each expert of a dual-expert model (any mix of float and
    quantized layers): `runner(expert, step, x, t)` with the context bound by `bind`."""

    def __init__(self, experts: dict[str, WanDiT], cfg: SampleConfig):
        self.cfg = cfg
        self._fns = {}
        for name, module in experts.items():
            graphdef, state = nnx.split(module)
            self._fns[name] = (_guided_jit(graphdef), state)
        self.context = self.negative = None

    def bind(self, context, negative) -> ExpertRunner:
        self.context = jnp.asarray(context)
        self.negative = None if negative is None else jnp.asarray(negative)
        return self

    def velocity(self, expert: str, x, t: float, scale: float | None = None) -> jax.Array:
        fn, state = self._fns[expert]
        scale = guidance(self.cfg, expert) if scale is None else scale
        neg = self.negative if scale != 1.0 else None
        return fn(state, x, jnp.float32(t), self.context, neg, float(scale))

    def __call__(self, expert: str, step: int, x, t: float) -> jax.Array:
        del step
        return self.velocity(expert, x, t)


@functools.lru_cache(maxsize=64)
def _guided_jit(graphdef: nnx.GraphDef):
    """Jitted guided velocity of one expert structure (cached: one compile per graphdef)."""

    def fn(state, x, t, context, negative, scale):
        model = nnx.merge(graphdef, state)
        return guided_velocity(lambda _, x_, t_, c_: model(x_, t_, c_), None, x, t, context,
                               negative, scale, "batched")

    return jax.jit(fn, static_argnums=(5,))


def pad_context(context, negative):
    """Both contexts at one length (the loop does the same inside `make_sampler`)."""
    if negative is None:
        return jnp.asarray(context), None
    n = max(context.shape[1], negative.shape[1])
    pad = lambda c: jnp.pad(jnp.asarray(c), ((0, 0), (0, n - c.shape[1]), (0, 0)))  # noqa: E731
    return pad(context), pad(negative)
