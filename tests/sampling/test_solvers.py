"""Solvers against independent references.

- UniPC and DPM++ against diffusers 0.42.1 (`UniPCMultistepScheduler`,
  `DPMSolverMultistepScheduler`) configured for flow matching on the official σ grids, whose step
  math is line-for-line the official `FlowUniPCMultistepScheduler` / `FlowDPMSolverMultistepScheduler`.
- DPM++ additionally, and Euler and the few-step x0-renoise / phased bridge transitions, against
  float64 NumPy written here from the official code and dmd_notes §2.1, §4.

The model is a random velocity field v_i(x) = x·W_k + b_i with one W per expert k (switching at the
A14B boundary) and a fresh random b_i per step, evaluated on each solver's own trajectory.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from wanjax import sampling

SHAPE = (2, 4, 3, 8)  # (batch, channels, ..., width); the field mixes the last axis


@dataclasses.dataclass(frozen=True)
class Field:
    """v_i(x) = x @ (W_high if high[i] else W_low) + b[i], in float32 (float64 for NumPy refs)."""

    w_high: np.ndarray
    w_low: np.ndarray
    b: np.ndarray
    high: np.ndarray

    def numpy(self, x: np.ndarray, i: int) -> np.ndarray:
        w = self.w_high if self.high[i] else self.w_low
        return x @ w.astype(x.dtype) + self.b[i].astype(x.dtype)

    def torch(self, x: torch.Tensor, i: int) -> torch.Tensor:
        w = self.w_high if self.high[i] else self.w_low
        return x @ torch.from_numpy(w) + torch.from_numpy(self.b[i])

    def jax(self, x: jax.Array, i: jax.Array) -> jax.Array:
        """Traceable in i: both experts are evaluated and the mask picks one."""
        high = jnp.asarray(self.high)[i]
        v = jnp.where(high, x @ jnp.asarray(self.w_high), x @ jnp.asarray(self.w_low))
        return v + jnp.asarray(self.b)[i]


def make_field(timesteps, seed: int = 0, switch: bool = True) -> Field:
    rng = np.random.default_rng(seed)
    n, width = len(timesteps), SHAPE[-1]
    w = rng.standard_normal((2, width, width)) * 0.5 / np.sqrt(width)
    w_high, w_low = w.astype(np.float32)
    high = np.asarray(sampling.expert_split(timesteps, 0.875)) if switch else np.ones(n, bool)
    b = rng.standard_normal((n, *SHAPE)).astype(np.float32)
    return Field(w_high, w_low, b, high)


def noise(seed: int = 1, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run_ours(solver: str, x_T, sigmas, field: Field, **init_kw) -> np.ndarray:
    """Python loop over a jitted step; returns the trajectory [N+1, *shape] of `state.x`."""
    s = sampling.get_solver(solver)
    step = jax.jit(lambda state, i: s.step(state, i, field.jax(state.x, i)))
    state = s.init(jnp.asarray(x_T), sigmas, **init_kw)
    traj = [state.x]
    for i in range(len(sigmas) - 1):
        state = step(state, i)
        traj.append(state.x)
    return np.stack([np.asarray(x) for x in traj])


def run_diffusers(sched, x_T, field: Field) -> np.ndarray:
    sched.set_begin_index(0)
    x = torch.from_numpy(x_T)
    traj = [x]
    for i, t in enumerate(sched.timesteps):
        x = sched.step(field.torch(x, i), t, x).prev_sample
        traj.append(x)
    return np.stack([x.numpy() for x in traj])


def max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ----------------------------------------------------------------------------------------------
# UniPC


def diffusers_unipc(num_steps: int, shift: float) -> UniPCMultistepScheduler:
    """diffusers UniPC on the official grid: it shifts custom (unshifted) sigmas by flow_shift."""
    sched = UniPCMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        predict_x0=True,
        solver_type="bh2",
        lower_order_final=True,
        use_flow_sigmas=True,
        flow_shift=shift,
        final_sigmas_type="zero",
    )
    sched.set_timesteps(sigmas=np.linspace(sampling.SIGMA_MAX, 0.0, num_steps + 1)[:-1])
    return sched


@pytest.mark.parametrize("switch", [False, True], ids=["one_expert", "expert_switch"])
def test_unipc_matches_diffusers_a14b(switch):
    timesteps, sigmas = sampling.flow_schedule(40, 12.0)
    sched = diffusers_unipc(40, 12.0)
    assert float(sched.sigmas[-1]) == 0.0  # final_sigmas_type="zero": ends exactly at σ = 0
    np.testing.assert_array_equal(sched.sigmas.numpy(), np.asarray(sigmas))
    field = make_field(timesteps, switch=switch)
    if switch:
        assert field.high.sum() == 26
    x_T = noise()
    ref = run_diffusers(sched, x_T, field)
    ours = run_ours("unipc", x_T, sigmas, field)
    assert max_err(ours, ref) <= 1e-5


def test_unipc_state_must_carry_across_the_switch():
    """A solver reset at step 26 would be visible: the test above is sensitive to the carry."""
    timesteps, sigmas = sampling.flow_schedule(40, 12.0)
    field = make_field(timesteps)
    ref = run_diffusers(diffusers_unipc(40, 12.0), noise(), field)
    state = sampling.unipc_init(jnp.asarray(noise()), sigmas)
    for i in range(40):
        if i == 26:
            state = sampling.unipc_init(state.x, sigmas)  # drop the history
        state = sampling.unipc_step(state, i, field.jax(state.x, i))
    assert max_err(state.x, ref[-1]) > 1e-3


@pytest.mark.parametrize("num_steps,shift", [(2, 5.0), (7, 5.0)])
def test_unipc_matches_diffusers_short_grids(num_steps, shift):
    """Short runs hit the order-1 warm-up, the order-1 corrector and lower_order_final together."""
    timesteps, sigmas = sampling.flow_schedule(num_steps, shift)
    field = make_field(timesteps, seed=3)
    ref = run_diffusers(diffusers_unipc(num_steps, shift), noise(4), field)
    assert max_err(run_ours("unipc", noise(4), sigmas, field), ref) <= 1e-5


# ----------------------------------------------------------------------------------------------
# DPM++ 2M


def diffusers_dpmpp(timesteps, sigmas) -> DPMSolverMultistepScheduler:
    """diffusers DPM-Solver++ with Wan's dpm++ grid written in.

    Its `set_timesteps` takes no custom sigmas and its flow grid starts at shift(0.999), not 1, so
    the official σ and t are assigned after `set_timesteps` (the step math reads only these).
    """
    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        use_flow_sigmas=True,
        flow_shift=1.0,
        final_sigmas_type="zero",
    )
    sched.set_timesteps(len(timesteps))
    assert float(sched.sigmas[-1]) == 0.0  # final_sigmas_type="zero"
    sched.sigmas = torch.from_numpy(np.array(sigmas))
    sched.timesteps = torch.from_numpy(np.asarray(timesteps).astype(np.int64))
    return sched


def dpmpp_reference64(x_T, sigmas, field: Field) -> np.ndarray:
    """Official FlowDPMSolverMultistepScheduler.step (dpmsolver++, order 2, midpoint), float64."""
    sig = np.asarray(sigmas, np.float64)
    n = len(sig) - 1
    x, history, traj = x_T.astype(np.float64), [], [x_T.astype(np.float64)]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.log(1 - sig) - np.log(sig)
        for i in range(n):
            m0 = x - sig[i] * field.numpy(x, i)
            h = lam[i + 1] - lam[i]
            x_next = (sig[i + 1] / sig[i]) * x - ((1 - sig[i + 1]) * (np.exp(-h) - 1.0)) * m0
            if 0 < i < n - 1:  # lower_order_nums >= 1 and not the final (σ = 0) step
                r0 = (lam[i] - lam[i - 1]) / h
                d1 = (1.0 / r0) * (m0 - history[-1])
                x_next = x_next - 0.5 * ((1 - sig[i + 1]) * (np.exp(-h) - 1.0)) * d1
            history.append(m0)
            x = x_next
            traj.append(x)
    return np.stack(traj)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("switch", [False, True], ids=["one_expert", "expert_switch"])
def test_dpmpp_matches_diffusers_on_official_grid(switch):
    timesteps, sigmas = sampling.dpmpp_flow_schedule(40, 12.0)
    field = make_field(timesteps, seed=5, switch=switch)
    ref = run_diffusers(diffusers_dpmpp(timesteps, sigmas), noise(6), field)
    assert np.isfinite(ref).all()
    assert max_err(run_ours("dpm++", noise(6), sigmas, field), ref) <= 1e-5


@pytest.mark.parametrize("num_steps,shift", [(40, 12.0), (5, 5.0)])
def test_dpmpp_matches_float64_official_algorithm(num_steps, shift):
    timesteps, sigmas = sampling.dpmpp_flow_schedule(num_steps, shift)
    field = make_field(timesteps, seed=7)
    ref = dpmpp_reference64(noise(8), sigmas, field)
    assert max_err(run_ours("dpm++", noise(8), sigmas, field), ref) <= 1e-5


# ----------------------------------------------------------------------------------------------
# Euler and the few-step student transitions


def test_euler_matches_float64():
    timesteps, sigmas = sampling.flow_schedule(40, 12.0)
    field = make_field(timesteps, seed=9)
    sig = np.asarray(sigmas, np.float64)
    x = noise(10).astype(np.float64)
    ref = [x]
    for i in range(40):
        x = x + (sig[i + 1] - sig[i]) * field.numpy(x, i)
        ref.append(x)
    assert max_err(run_ours("euler", noise(10), sigmas, field), np.stack(ref)) <= 1e-5


def renoise_reference64(x_T, sigmas, targets, eps, field: Field) -> np.ndarray:
    """dmd_notes §2.1 / §4: x̂ = x − (σ_i − τ_i)v; x ← α·x̂ + β·ε_i; τ = 0 gives x0-renoise."""
    sig, tau = np.asarray(sigmas, np.float64), np.asarray(targets, np.float64)
    x, traj = x_T.astype(np.float64), [x_T.astype(np.float64)]
    for i in range(len(sig) - 1):
        x_hat = x - (sig[i] - tau[i]) * field.numpy(x, i)
        alpha = (1 - sig[i + 1]) / (1 - tau[i])
        beta = np.sqrt(max(sig[i + 1] ** 2 - alpha**2 * tau[i] ** 2, 0.0))
        x = alpha * x_hat + beta * eps[i]
        traj.append(x)
    return np.stack(traj)


def test_x0_renoise_matches_float64_with_explicit_noise():
    timesteps, sigmas = sampling.few_step_schedule([1000, 750, 500, 250], 5.0)
    field = make_field(timesteps, seed=11)
    eps = noise(12, (4, *SHAPE))
    ref = renoise_reference64(noise(13), sigmas, np.zeros(4), eps, field)

    state = sampling.renoise_init(jnp.asarray(noise(13)), sigmas)
    traj, x0s = [state.x], []
    for i in range(4):
        v = field.jax(state.x, i)
        x0s.append(sampling.predict_x0(state.x, sigmas[i], v))
        state = sampling.renoise_step(state, i, v, jnp.asarray(eps[i]))
        traj.append(state.x)
    assert max_err(np.stack(traj), ref) <= 1e-5
    # The renoise of step i uses x0_i and ε_i; the output is x0 of the last step, exactly.
    np.testing.assert_allclose(traj[1], (1 - sigmas[1]) * x0s[0] + sigmas[1] * eps[0], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(state.x), np.asarray(x0s[-1]))


def test_x0_renoise_key_noise_is_deterministic_and_explicit():
    """ε_i = normal(fold_in(key, i)): same key, same rollout; the reference sees the same ε_i."""
    _, sigmas = sampling.few_step_schedule([1000, 750, 500, 250], 5.0)
    field = make_field(sigmas[:-1], seed=14)

    @jax.jit
    def rollout(x_T, key):
        def body(i, state):
            return sampling.renoise_step(state, i, field.jax(state.x, i))

        return jax.lax.fori_loop(0, 4, body, sampling.renoise_init(x_T, sigmas, key=key)).x

    x_T, key = jnp.asarray(noise(15)), jax.random.key(0)
    a, b, c = rollout(x_T, key), rollout(x_T, key), rollout(x_T, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert max_err(a, c) > 1e-2
    eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), SHAPE))(jnp.arange(4))
    ref = renoise_reference64(noise(15), sigmas, np.zeros(4), np.asarray(eps), field)
    assert max_err(a, ref[-1]) <= 1e-5


def test_phased_bridge_rollout_matches_float64():
    """SF+ wan22 inference (dmd_notes §4): high expert to x_b twice, then low expert to x0."""
    timesteps, sigmas = sampling.few_step_schedule([1000, 750, 500, 250], 5.0)
    sigma_b = float(sampling.shift_sigma(0.5, 5.0))
    targets = np.array([sigma_b, sigma_b, 0.0, 0.0], np.float32)
    field = make_field(timesteps, seed=16)
    eps = noise(17, (4, *SHAPE))
    ref = renoise_reference64(noise(18), sigmas, targets, eps, field)

    state = sampling.renoise_init(jnp.asarray(noise(18)), sigmas, targets=targets)
    traj = [state.x]
    for i in range(4):
        state = sampling.renoise_step(state, i, field.jax(state.x, i), jnp.asarray(eps[i]))
        traj.append(state.x)
    assert max_err(np.stack(traj), ref) <= 1e-5
    # Step 1 lands on σ_b = its target, so it hands x̂_b to the low expert without noise.
    v1 = field.jax(traj[1], 1)
    np.testing.assert_array_equal(traj[2], traj[1] - (sigmas[1] - targets[1]) * v1)


@settings(max_examples=50, deadline=None)
@given(tau=st.floats(0.0, 0.95), frac=st.floats(0.0, 1.0))
def test_bridge_renoise_has_the_flow_marginal(tau, frac):
    """x_τ = (1−τ)x0 + τε₁ bridged to σ ≥ τ is (1−σ)x0 + σε: α(1−τ) = 1−σ, α²τ² + β² = σ²."""
    sigma = tau + frac * (1.0 - tau) * 0.99
    x0 = jnp.array(1.0)
    alpha = sampling.bridge_renoise(x0, tau, sigma, jnp.array(0.0))  # α·1 + β·0
    beta = sampling.bridge_renoise(jnp.array(0.0), tau, sigma, x0)  # α·0 + β·1
    assert float(alpha) * (1 - tau) == pytest.approx(1 - sigma, abs=1e-6)
    assert float(alpha) ** 2 * tau**2 + float(beta) ** 2 == pytest.approx(sigma**2, abs=1e-5)


# ----------------------------------------------------------------------------------------------
# Loops: jitted lax.fori_loop == Python loop; gradients stay finite


@pytest.mark.parametrize("solver,grid", [
    ("unipc", "unipc"), ("dpm++", "dpmpp"), ("euler", "unipc"), ("x0_renoise", "few"),
])  # fmt: skip
def test_jitted_fori_loop_equals_python_loop(solver, grid):
    """Traced step index inside a jitted fori_loop vs Python-int loops over the same step.

    Against a Python loop over the jitted step the result is bit-identical. Against a fully eager
    loop it differs by float32 rounding only (eager and fused matmuls of the test field round
    differently, about 1 ulp per step), hence the small tolerance there.
    """
    if grid == "few":
        timesteps, sigmas = sampling.few_step_schedule([1000, 750, 500, 250], 5.0)
        init_kw = {"key": jax.random.key(2)}
    else:
        make = sampling.flow_schedule if grid == "unipc" else sampling.dpmpp_flow_schedule
        timesteps, sigmas = make(12, 12.0)
        init_kw = {}
    field = make_field(timesteps, seed=19)
    s = sampling.get_solver(solver)
    n = len(timesteps)

    def body(i, state):
        return s.step(state, i, field.jax(state.x, i))

    x_T = jnp.asarray(noise(20))
    fori = jax.jit(lambda x: jax.lax.fori_loop(0, n, body, s.init(x, sigmas, **init_kw)).x)(x_T)

    jit_body = jax.jit(body)
    eager = jitted = s.init(x_T, sigmas, **init_kw)
    for i in range(n):
        eager, jitted = body(i, eager), jit_body(i, jitted)
    np.testing.assert_array_equal(np.asarray(fori), np.asarray(jitted.x))
    assert max_err(fori, eager.x) <= 5e-6


@pytest.mark.parametrize("solver,make", [
    ("unipc", sampling.flow_schedule), ("dpm++", sampling.dpmpp_flow_schedule),
])  # fmt: skip
def test_gradients_through_the_loop_are_finite(solver, make):
    """σ_N = 0 (λ = +inf) and the dpm++ σ_0 = 1 (λ = −inf) must not leak NaN into d/dx."""
    timesteps, sigmas = make(6, 12.0)
    field = make_field(timesteps, seed=21)
    s = sampling.get_solver(solver)

    def body(i, state):
        return s.step(state, i, field.jax(state.x, i))

    def loss(x_T):
        return jnp.sum(jax.lax.fori_loop(0, 6, body, s.init(x_T, sigmas)).x ** 2)

    assert np.isfinite(np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(noise(22))))).all()


# ----------------------------------------------------------------------------------------------
# Errors


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="'heun'"):
        sampling.get_solver("heun")
    with pytest.raises(ValueError, match="sigmas"):
        sampling.unipc_init(jnp.zeros(SHAPE), jnp.zeros((1,)))
    with pytest.raises(ValueError, match="targets"):
        sampling.renoise_init(jnp.zeros(SHAPE), jnp.zeros((5,)), targets=jnp.zeros((3,)))
    state = sampling.renoise_init(jnp.zeros(SHAPE), jnp.zeros((5,)))
    with pytest.raises(ValueError, match="noise"):
        sampling.renoise_step(state, 0, jnp.zeros(SHAPE))
