"""Flow-matching solvers as pure functions over an explicit state (spec §6, dmd_notes §2.1, §4).

Every solver has the same shape, so one `lax.fori_loop`/`scan` over a static number of steps can
drive any of them:

    state = init(x_T, sigmas)            # sigmas: [N+1], last entry 0 for a full sample
    for i in range(N):                   # or lax.fori_loop; i may be traced
        v = model(state.x, timesteps[i])   # state.x is the sample x_i the model sees
        state = step(state, i, v)
    sample = state.x                     # after N steps: the final sample

The model output is always a velocity v ≈ ε − x0, and x0 = x − σ·v. Order selection depends on
the (possibly traced) step index, so it is done with `jnp.where` on scalar coefficients: no Python
branching on traced values, and the coefficients that are not selected are kept finite so that
gradients through a solver stay clean. All math is float32.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

F32 = jnp.float32
StepIndex = Int[ArrayLike, ""]


def _state(cls):
    """A frozen dataclass registered as a pytree, so it can be a loop carry."""
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


def _check_sigmas(sigmas: Float[ArrayLike, " n+1"]) -> Float[Array, " n+1"]:
    sigmas = jnp.asarray(sigmas, F32)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {sigmas.shape}")
    return sigmas


def _log_snr(sigma: Float[Array, ""]) -> Float[Array, ""]:
    """λ = log α − log σ with α = 1 − σ; +inf at σ = 0 (the exact final step), −inf at σ = 1."""
    return jnp.log(1.0 - sigma) - jnp.log(sigma)


def _is_order2(j: Int[Array, ""], n: int) -> Bool[Array, ""]:
    """Official multistep order: min(2, N − j, j + 1) == 2 (warm-up first, lower_order_final)."""
    return (j >= 1) & (j <= n - 2)


def predict_x0(
    x: Float[Array, "*s"], sigma: Float[ArrayLike, ""], velocity: Float[Array, "*s"]
) -> Float[Array, "*s"]:
    """x0 = x − σ·v: the data prediction all solvers build on."""
    return x.astype(F32) - jnp.asarray(sigma, F32) * velocity.astype(F32)


# ----------------------------------------------------------------------------------------------
# UniPC (official FlowUniPCMultistepScheduler: order 2, bh2, predict_x0, lower_order_final)


@_state
class UniPCState:
    """UniPC carry. `x` is the predicted sample x_i that the model is evaluated on.

    `x_prev` is the corrected sample before the last predictor and `m_prev`, `m_prev2` are the
    last two x0-predictions. Nothing resets at an expert switch: the caller only swaps models.
    """

    x: Float[Array, "*s"]
    x_prev: Float[Array, "*s"]
    m_prev: Float[Array, "*s"]
    m_prev2: Float[Array, "*s"]
    sigmas: Float[Array, " n+1"]


def unipc_init(x_T: Float[Array, "*s"], sigmas: Float[ArrayLike, " n+1"]) -> UniPCState:
    """Start UniPC from the noise x_T on the grid `sigmas` (e.g. `flow_schedule(N, s).sigmas`)."""
    x = x_T.astype(F32)
    zeros = jnp.zeros_like(x)
    return UniPCState(x=x, x_prev=zeros, m_prev=zeros, m_prev2=zeros, sigmas=_check_sigmas(sigmas))


def unipc_step(state: UniPCState, i: StepIndex, velocity: Float[Array, "*s"]) -> UniPCState:
    """One UniPC step: corrector UniC on x_i (for i > 0), then predictor UniP to x_{i+1}.

    Follows spec §6 exactly; at σ_{i+1} = 0 the predictor returns the x0-prediction m_i.
    """
    sig = state.sigmas
    n = sig.shape[0] - 1
    i = jnp.asarray(i, jnp.int32)
    s_i, s_p, s_pp = sig[i], sig[jnp.maximum(i - 1, 0)], sig[jnp.maximum(i - 2, 0)]
    lam_i, lam_p, lam_pp = _log_snr(s_i), _log_snr(s_p), _log_snr(s_pp)
    m = predict_x0(state.x, s_i, velocity)

    # Corrector (UniC-p, p = order of the previous predictor), bh2: B(h) = expm1(−h).
    use_c = i > 0
    c2 = _is_order2(i - 1, n)
    h = jnp.where(use_c, lam_i - lam_p, 1.0)
    hh = -h
    phi1 = jnp.expm1(hh)
    b_h = phi1
    r = jnp.where(c2, (lam_pp - lam_p) / h, 0.0)
    g1 = phi1 / hh - 1.0
    g2 = g1 / hh - 0.5
    b0, b1 = g1 / b_h, 2.0 * g2 / b_h
    rho0 = (b0 - b1) / (1.0 - r)  # solves [[1, 1], [r, 1]] ρ = [b0, b1]
    rho1 = jnp.where(c2, b0 - rho0, 0.5)  # order 1 uses ρ = 0.5
    rho0_over_r = jnp.where(c2, rho0 / jnp.where(c2, r, 1.0), 0.0)
    alpha_i = 1.0 - s_i
    x_corr = (
        (s_i / s_p) * state.x_prev
        - (alpha_i * phi1) * state.m_prev
        - (alpha_i * b_h)
        * (rho0_over_r * (state.m_prev2 - state.m_prev) + rho1 * (m - state.m_prev))
    )
    x = jnp.where(use_c, x_corr, state.x)

    # Predictor (UniP-p); order 2 uses ρ = 0.5 on D1 = (m_{i-1} − m_i)/r.
    s_t = sig[i + 1]
    p2 = _is_order2(i, n)
    h = _log_snr(s_t) - lam_i
    phi1 = jnp.expm1(-h)
    b_h = phi1
    r = jnp.where(p2, (lam_p - lam_i) / h, 1.0)
    alpha_t = 1.0 - s_t
    d1_coef = jnp.where(p2, alpha_t * b_h * 0.5 / r, 0.0)
    x_next = (s_t / s_i) * x - (alpha_t * phi1) * m - d1_coef * (state.m_prev - m)
    return UniPCState(x=x_next, x_prev=x, m_prev=m, m_prev2=state.m_prev, sigmas=sig)


# ----------------------------------------------------------------------------------------------
# DPM++ 2M (official FlowDPMSolverMultistepScheduler: dpmsolver++, order 2, midpoint)


@_state
class DPMState:
    """DPM++ carry: the current sample `x` and the previous x0-prediction `m_prev`."""

    x: Float[Array, "*s"]
    m_prev: Float[Array, "*s"]
    sigmas: Float[Array, " n+1"]


def dpmpp_init(x_T: Float[Array, "*s"], sigmas: Float[ArrayLike, " n+1"]) -> DPMState:
    """Start DPM++ 2M from x_T (the official grid is `dpmpp_flow_schedule(N, s).sigmas`)."""
    x = x_T.astype(F32)
    return DPMState(x=x, m_prev=jnp.zeros_like(x), sigmas=_check_sigmas(sigmas))


def dpmpp_step(state: DPMState, i: StepIndex, velocity: Float[Array, "*s"]) -> DPMState:
    """One multistep DPM-Solver++(2M) midpoint step; first order at the first and last step.

    Written like the official code (exp(−h) − 1, D1 = (m_i − m_{i−1})/r0): on the dpm++ grid
    σ_0 = 1 gives λ_0 = −inf, so the second step's D1 vanishes exactly as it does there.
    """
    sig = state.sigmas
    n = sig.shape[0] - 1
    i = jnp.asarray(i, jnp.int32)
    s_i, s_t, s_p = sig[i], sig[i + 1], sig[jnp.maximum(i - 1, 0)]
    lam_i = _log_snr(s_i)
    m = predict_x0(state.x, s_i, velocity)
    p2 = _is_order2(i, n)
    h = _log_snr(s_t) - lam_i
    coef = (1.0 - s_t) * (jnp.exp(-h) - 1.0)
    h0 = jnp.where(p2, lam_i - _log_snr(s_p), 1.0)
    inv_r0 = jnp.where(p2, h / h0, 0.0)
    x_next = (s_t / s_i) * state.x - coef * m - (0.5 * coef * inv_r0) * (m - state.m_prev)
    return DPMState(x=x_next, m_prev=m, sigmas=sig)


# ----------------------------------------------------------------------------------------------
# Euler


@_state
class EulerState:
    """Euler carry: just the current sample and the grid."""

    x: Float[Array, "*s"]
    sigmas: Float[Array, " n+1"]


def euler_init(x_T: Float[Array, "*s"], sigmas: Float[ArrayLike, " n+1"]) -> EulerState:
    """Start the Euler ODE solver from x_T."""
    return EulerState(x=x_T.astype(F32), sigmas=_check_sigmas(sigmas))


def euler_step(state: EulerState, i: StepIndex, velocity: Float[Array, "*s"]) -> EulerState:
    """x ← x + (σ_{i+1} − σ_i)·v (Wan2.2-Lightning's distillation sampler)."""
    sig = state.sigmas
    i = jnp.asarray(i, jnp.int32)
    x_next = state.x + (sig[i + 1] - sig[i]) * velocity.astype(F32)
    return EulerState(x=x_next, sigmas=sig)


# ----------------------------------------------------------------------------------------------
# Few-step student: x0-renoise (dmd_notes §2.1), with the phased bridge of §4 as an option


@_state
class RenoiseState:
    """Few-step student carry.

    `targets[i]` is the level step i denoises to (0: predict x0; σ_b: the phased high expert's
    x_b). `key`, if set, supplies the fresh noise of step i as normal(fold_in(key, i)).
    """

    x: Float[Array, "*s"]
    sigmas: Float[Array, " n+1"]
    targets: Float[Array, " n"]
    key: PRNGKeyArray | None = None


def renoise_init(
    x_T: Float[Array, "*s"],
    sigmas: Float[ArrayLike, " n+1"],
    *,
    key: PRNGKeyArray | None = None,
    targets: Float[ArrayLike, " n"] | None = None,
) -> RenoiseState:
    """Start a student rollout from x_T on `sigmas` (e.g. `few_step_schedule(raw, 5).sigmas`).

    `targets` defaults to zeros: plain x0-renoise. Without `key`, pass `noise` to every step.
    """
    sigmas = _check_sigmas(sigmas)
    n = sigmas.shape[0] - 1
    targets = jnp.zeros((n,), F32) if targets is None else jnp.asarray(targets, F32)
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},) to match sigmas, got {targets.shape}")
    return RenoiseState(x=x_T.astype(F32), sigmas=sigmas, targets=targets, key=key)


def bridge_renoise(
    x_target: Float[Array, "*s"],
    target: Float[ArrayLike, ""],
    sigma: Float[ArrayLike, ""],
    noise: Float[Array, "*s"],
) -> Float[Array, "*s"]:
    """Sample q(x_σ | x_τ) of the rectified flow: α·x_τ + β·ε, α = (1−σ)/(1−τ), β² = σ² − α²τ².

    τ = 0 is the standard re-noise (1−σ)·x0 + σ·ε; σ = τ returns x_τ unchanged (β = 0).
    """
    target, sigma = jnp.asarray(target, F32), jnp.asarray(sigma, F32)
    alpha = (1.0 - sigma) / (1.0 - target)
    beta = jnp.sqrt(jnp.maximum(sigma * sigma - alpha * alpha * (target * target), 0.0))
    return alpha * x_target.astype(F32) + beta * noise.astype(F32)


def renoise_step(
    state: RenoiseState,
    i: StepIndex,
    velocity: Float[Array, "*s"],
    noise: Float[Array, "*s"] | None = None,
) -> RenoiseState:
    """x̂ = x − (σ_i − τ_i)·v, then re-noise x̂ from τ_i to σ_{i+1} with fresh noise ε_i.

    With τ = 0 this is x0 = x − σ_i·v; x ← (1 − σ_{i+1})·x0 + σ_{i+1}·ε_i, and the last step
    (σ_N = 0) returns x0 itself. `noise` (ε_i) overrides the state's key.
    """
    sig = state.sigmas
    i = jnp.asarray(i, jnp.int32)
    if noise is None:
        if state.key is None:
            raise ValueError("renoise_step needs `noise` when the state was built without a key")
        noise = jax.random.normal(jax.random.fold_in(state.key, i), state.x.shape, F32)
    tau = state.targets[i]
    x_hat = state.x - (sig[i] - tau) * velocity.astype(F32)
    x_next = bridge_renoise(x_hat, tau, sig[i + 1], noise)
    return dataclasses.replace(state, x=x_next)


# ----------------------------------------------------------------------------------------------
# Registry


@dataclasses.dataclass(frozen=True)
class Solver:
    """A solver by name: `init(x_T, sigmas, **kw) -> state`, `step(state, i, v) -> state`."""

    name: str
    init: Callable[..., Any]
    step: Callable[..., Any]


SOLVERS: dict[str, Solver] = {
    "unipc": Solver("unipc", unipc_init, unipc_step),
    "dpm++": Solver("dpm++", dpmpp_init, dpmpp_step),
    "euler": Solver("euler", euler_init, euler_step),
    "x0_renoise": Solver("x0_renoise", renoise_init, renoise_step),
}


def get_solver(name: str) -> Solver:
    """Look a solver up by name ('unipc', 'dpm++', 'euler', 'x0_renoise')."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; expected one of {sorted(SOLVERS)}") from None
