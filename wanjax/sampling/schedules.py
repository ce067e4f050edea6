"""Flow-matching noise schedules for Wan2.2 sampling (spec §6, dmd_notes §1).

Noise level σ ∈ [0, 1], x_σ = (1 − σ)·x0 + σ·ε, and the DiT timestep is t = 1000·σ. The step grids
are static (they depend only on Python numbers), so they are built with NumPy in the same float64
path the official schedulers take and handed back as JAX arrays: float32 σ for the solver, the
truncated integer t for the DiT.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

NUM_TRAIN_TIMESTEPS = 1000

# The official grid starts at the first sigma of the float32 training table
# `1 - linspace(1, 1/1000, 1000)[::-1]`, i.e. float32(0.999), read back as a Python float.
SIGMA_MAX = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))


class Schedule(NamedTuple):
    """A sampling grid: `timesteps[i]` goes to the DiT, `sigmas[i]` to the solver.

    `sigmas` has one more entry than `timesteps`: the level the last step lands on (0 for a full
    sample). Being a tuple, `t, sigmas = flow_schedule(...)` also works.
    """

    timesteps: Int[Array, " n"] | Float[Array, " n"]
    sigmas: Float[Array, " n+1"]


def _check_shift(shift: float) -> None:
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift!r}")


def _check_num_steps(num_steps: int) -> None:
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")


def shift_sigma(sigma: Float[ArrayLike, "*s"], shift: float) -> Float[ArrayLike, "*s"]:
    """Wan's timestep shift σ' = s·σ / (1 + (s − 1)·σ); s > 1 spends more steps at high noise.

    Works on Python floats, NumPy and JAX arrays and keeps their dtype (float64 stays float64).
    """
    _check_shift(shift)
    return shift * sigma / (1 + (shift - 1) * sigma)


def _grid(sigma_max: float, num_steps: int, shift: float) -> Schedule:
    """The official `set_timesteps` path: float64 linspace and shift, int truncation, fp32 σ."""
    _check_num_steps(num_steps)
    _check_shift(shift)
    if not 0.0 < sigma_max <= 1.0:
        raise ValueError(f"sigma_max must be in (0, 1], got {sigma_max!r}")
    sigmas64 = shift_sigma(np.linspace(sigma_max, 0.0, num_steps + 1)[:-1], shift)
    timesteps = (sigmas64 * NUM_TRAIN_TIMESTEPS).astype(np.int64)  # truncation, as torch .to(int64)
    sigmas = np.concatenate([sigmas64, [0.0]]).astype(np.float32)
    return Schedule(jnp.asarray(timesteps, jnp.int32), jnp.asarray(sigmas))


def flow_schedule(num_steps: int, shift: float, *, sigma_max: float = SIGMA_MAX) -> Schedule:
    """The official UniPC grid: `FlowUniPCMultistepScheduler(shift=1).set_timesteps(N, shift=s)`.

    σ_i = shift(linspace(σ_max, 0, N+1)[:-1]) with σ_N = 0 and t_i = int(1000·σ_i). The A14B
    default `flow_schedule(40, 12.0)` starts at σ_0 = 0.9999166, t_0 = 999. Long grids can repeat
    an integer t (e.g. N = 100, s = 12); the official scheduler then looks its first index up as 1,
    whereas the solvers here always step i = 0..N−1.
    """
    return _grid(sigma_max, num_steps, shift)


def dpmpp_flow_schedule(num_steps: int, shift: float) -> Schedule:
    """The official dpm++ grid (`get_sampling_sigmas`): shift(linspace(1, 0, N+1)[:N]), t_0 = 1000."""
    return _grid(1.0, num_steps, shift)


def _warped_sigmas(raw_timesteps: Sequence[float] | ArrayLike, shift: float) -> np.ndarray:
    raw = np.asarray(raw_timesteps, np.float64)
    if raw.ndim != 1 or raw.size == 0:
        raise ValueError(f"raw_timesteps must be a non-empty 1-D list, got shape {raw.shape}")
    if np.any(raw < 0) or np.any(raw > NUM_TRAIN_TIMESTEPS):
        raise ValueError(
            f"raw_timesteps must lie in [0, {NUM_TRAIN_TIMESTEPS}], got {raw.tolist()}"
        )
    if np.any(np.diff(raw) >= 0) or raw[-1] == 0:
        # a student runs from noise towards data: each step at a lower noise level, none at 0
        # (the grid's final sigma = 0 is appended)
        raise ValueError(f"raw_timesteps must be strictly decreasing and > 0, got {raw.tolist()}")
    return shift_sigma(raw / NUM_TRAIN_TIMESTEPS, shift)


def warp_timesteps(raw_timesteps: Sequence[float] | ArrayLike, shift: float) -> Float[Array, " k"]:
    """Few-step student timesteps: raw t ↦ 1000·shift(t/1000) ("warp_denoising_step").

    With shift 5, raw [1000, 750, 500, 250] become [1000, 937.5, 833.33, 625] (dmd_notes §1).
    The result is float: students are trained on these exact, untruncated values.
    """
    sigmas = _warped_sigmas(raw_timesteps, shift)
    return jnp.asarray((sigmas * NUM_TRAIN_TIMESTEPS).astype(np.float32))


def few_step_schedule(raw_timesteps: Sequence[float] | ArrayLike, shift: float) -> Schedule:
    """The student grid: `warp_timesteps` and their σ = t/1000, with a final σ = 0 appended.

    Feed it to the x0-renoise solver; the last step then lands exactly on the x0 prediction.
    """
    sigmas = _warped_sigmas(raw_timesteps, shift)
    timesteps = (sigmas * NUM_TRAIN_TIMESTEPS).astype(np.float32)
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    return Schedule(jnp.asarray(timesteps), jnp.asarray(sigmas))


def expert_split(timesteps: Float[ArrayLike, " n"], boundary: float) -> Bool[Array, " n"]:
    """True where the high-noise expert runs: t ≥ boundary·1000 (A14B: 0.875, so 26 of 40 steps)."""
    if not 0.0 <= boundary <= 1.0:
        raise ValueError(f"boundary must be in [0, 1], got {boundary!r}")
    return jnp.asarray(timesteps) >= boundary * NUM_TRAIN_TIMESTEPS
