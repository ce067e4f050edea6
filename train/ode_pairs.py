"""Teacher ODE pairs for DMD's optional regression loss (DMD eq. 9; dmd_notes section 2.7).

A pair is one (prompt, noise) integrated by the frozen teacher's deterministic flow ODE with CFG
(Euler on a fine shifted grid that contains every noise level of the student's grid), recorded
at the student's noise levels. The regression term then asks the student's step k, fed the ODE's
point at sigma_k, to land on the ODE's point at the step's endpoint (x0, or the hand-over latent
sigma_b in the phased high-noise stage), the ODE-regression of CausVid and Self-Forcing, which
anchors the few-step map to the teacher's own noise-to-sample map.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from tqdm import tqdm

from train.data import epoch_indices, pad_negative
from wanjax.sampling.loop import guided_velocity
from wanjax.sampling.schedules import shift_sigma

PAIRS_FILE = "ode_pairs.npz"


def ode_grid(student_sigmas: np.ndarray, steps: int, shift: float) -> np.ndarray:
    """A shifted `steps`-interval grid from 1 to 0, merged with the student's noise levels (so
    that the ODE passes through each of them exactly), strictly decreasing, float64."""
    fine = shift_sigma(np.linspace(1.0, 0.0, steps + 1), shift)
    grid = np.union1d(np.round(fine, 12), np.round(np.asarray(student_sigmas, np.float64), 12))
    return grid[::-1].copy()


@dataclasses.dataclass(frozen=True)
class PairSettings:
    """What a set of pairs depends on (a cached set made with other settings is not reused)."""

    count: int
    ode_steps: int
    ode_shift: float
    seed: int
    student_sigmas: tuple[float, ...]
    guidance_high: float
    guidance_low: float
    boundary: float
    teacher: str


def teacher_ode(apply, teacher: dict, x_T: Float[Array, "b ..."], ctx, neg, grid: np.ndarray,
                keep: np.ndarray, boundary: float, guidance: tuple[float, float]) -> np.ndarray:
    """Euler integration of the teacher's CFG flow ODE from x_T at grid[0] along `grid`.

    Every step is one expert's (the one owning its noise level: high iff t >= boundary * 1000,
    as the sampler routes). Returns the states at the grid values `keep`, `[B, len(keep), ...]`.
    """
    step = _euler_step(apply)
    wanted = {float(s): j for j, s in enumerate(keep)}
    out = [None] * len(keep)
    x = jnp.asarray(x_T, jnp.float32)
    for i in range(len(grid)):
        if float(grid[i]) in wanted:
            out[wanted[float(grid[i])]] = np.asarray(x)
        if i == len(grid) - 1:
            break
        high = grid[i] * 1000.0 >= boundary * 1000.0
        expert, scale = ("high", guidance[0]) if high else ("low", guidance[1])
        x = step(teacher[expert], x, jnp.float32(grid[i]), jnp.float32(grid[i + 1]), ctx, neg,
                 scale=float(scale))
    missing = [float(s) for s, o in zip(keep, out, strict=True) if o is None]
    if missing:
        raise ValueError(f"noise levels {missing} are not on the ODE grid")
    return np.stack(out, axis=1)


@functools.lru_cache(maxsize=8)
def _euler_step(apply):
    """One jitted Euler step per `apply`: `make_pairs` integrates chunk after chunk with the same
    function, which must not be traced and compiled again for each chunk."""

    @functools.partial(jax.jit, static_argnames="scale")
    def step(params, x, sigma, sigma_next, ctx, neg, scale):
        v = guided_velocity(apply, params, x, sigma * 1000.0, ctx, neg, scale, "batched")
        return x + (sigma_next - sigma) * v

    return step


def make_pairs(apply, teacher: dict, prompts, encode, negative, latent_shape, s: PairSettings,
               batch: int = 64, progress: bool = True) -> dict:
    """`{'x': [P, K+1, ...] float32 (ODE states at the student's K+1 noise levels, the last 0),
    'prompt': [P] indices into prompts}` for P = s.count pairs drawn with seed s.seed."""
    rng = np.random.default_rng(s.seed)
    idx = rng.integers(0, len(prompts), s.count)
    keep = np.asarray(s.student_sigmas, np.float64)
    grid = ode_grid(keep, s.ode_steps, s.ode_shift)
    keep = np.round(keep, 12)
    key = jax.random.PRNGKey(s.seed)
    chunks = []
    for start in tqdm(range(0, s.count, batch), desc="teacher ODE pairs", disable=not progress,
                      unit="batch"):
        sel = idx[start:start + batch]
        ctx = jnp.asarray(encode([prompts[i] for i in sel]))
        neg = pad_negative(jnp.asarray(negative(len(sel))), ctx)
        noise = jax.random.normal(jax.random.fold_in(key, start), (len(sel), *latent_shape))
        chunks.append(teacher_ode(apply, teacher, noise, ctx, neg, grid, keep, s.boundary,
                                  (s.guidance_high, s.guidance_low)))
    return {"x": np.concatenate(chunks).astype(np.float32), "prompt": idx}


def load_or_make(path: Path, settings: PairSettings, make) -> dict:
    """The cached pairs at `path` when they were made with `settings`; else `make()`, saved
    atomically (a resumed run reuses them, so its regression batches are the straight run's)."""
    tag = json.dumps(dataclasses.asdict(settings), sort_keys=True)
    if path.is_file():
        with np.load(path) as f:
            if str(f["settings"]) == tag:
                return {"x": f["x"], "prompt": f["prompt"]}
    pairs = make()
    if jax.process_index() != 0:  # every process makes the same pairs; one writes them
        return pairs
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, x=pairs["x"], prompt=pairs["prompt"], settings=np.asarray(tag))
    tmp.replace(path)
    return pairs


def pair_batch(pairs: dict, gen_update: int, batch: int, seed: int) -> np.ndarray:
    """Indices of the pairs for generator update `gen_update`: epochs of a seeded permutation,
    a pure function of its arguments (so resume is exact)."""
    return epoch_indices(len(pairs["prompt"]), gen_update, batch, seed)
