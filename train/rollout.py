"""Few-step student rollouts: the sampler's own transitions, with an exit step for training.

`run_steps` applies the 'x0_renoise' solver step (the exact function sampling uses) for steps
[start, stop) of the student grid, so a rollout to the end reproduces the student sampler bit for
bit, and backward simulation (run the first k steps without gradient, then differentiate step k)
trains exactly the transitions inference will run.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from wanjax.sampling.solvers import RenoiseState, renoise_init, renoise_step

# apply(x [B, C, F, H, W], t [B], i: step index) -> velocity; picks the expert / params for step i
StepModel = Callable[[Array, Array, Array], Array]


def init_state(x_T: Float[Array, "b ..."], sigmas, targets, key) -> RenoiseState:
    """The sampler's initial state for noise x_T and per-step noise `fold_in(key, i)`."""
    return renoise_init(x_T, sigmas, key=key, targets=targets)


def run_steps(model: StepModel, state: RenoiseState, start, stop) -> RenoiseState:
    """Steps [start, stop) of the student sampler (stop may be traced: no gradient flows)."""

    def body(i, state):
        t = jnp.full((state.x.shape[0],), state.sigmas[i] * 1000.0, jnp.float32)
        return renoise_step(state, i, model(state.x, t, i))

    return jax.lax.fori_loop(start, stop, body, state)


def exit_step(key, first: int, stop: int) -> Array:
    """The step to differentiate, uniform over the stage's steps and shared by the whole batch
    (drawn from a replicated key, so every device agrees)."""
    return jax.random.randint(key, (), first, stop)
