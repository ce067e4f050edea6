"""Teacher ODE pairs against a closed form (float64) and the regression term against its formula."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import ode_pairs
from train.dmd_config import DMDConfig
from train.dmd_losses import StageSetup, generator_loss, regression_loss
from train.stages import make_stage

BOUNDARY = 0.875
RNG = np.random.default_rng(0)


def point_mass_apply(params, x, t, ctx):
    """The exact rectified-flow velocity of a point mass at mu = a * ctx[:, 0, 0]:
    v = (x - mu) / sigma. Its ODE path is a straight line to mu, which Euler integrates exactly."""
    sigma = (t / 1000.0).reshape((-1,) + (1,) * (x.ndim - 1))
    mu = (params["a"] * ctx[:, 0, 0]).reshape((-1,) + (1,) * (x.ndim - 1))
    return (x - mu) / sigma


def closed_form(x_T, c, n, grid_keep, switch, a_high, a_low, w_high, w_low):
    """float64: CFG of two point-mass velocities is the point mass at mu_u + w (mu_c - mu_u);
    the path is x(s) = mu + s / s0 (x(s0) - mu). A step belongs to the expert owning its start,
    so the high expert's line runs down to `switch`, the first grid level below the boundary."""
    mu_h = (a_high * (n + w_high * (c - n)))[:, None]
    mu_l = (a_low * (n + w_low * (c - n)))[:, None]
    x_b = mu_h + switch * (x_T - mu_h)
    out = []
    for s in grid_keep:
        out.append(mu_h + s * (x_T - mu_h) if s >= switch else mu_l + s / switch * (x_b - mu_l))
    return np.stack(out, axis=1)


def test_teacher_ode_matches_the_closed_form_path_with_cfg_and_routing():
    b, d = 3, 5
    x_T = RNG.standard_normal((b, d))
    c, n = RNG.standard_normal(b), RNG.standard_normal(b)
    ctx = np.zeros((b, 2, 1)), np.zeros((b, 2, 1))
    ctx[0][:, 0, 0], ctx[1][:, 0, 0] = c, n
    teacher = {"high": {"a": jnp.float32(1.0)}, "low": {"a": jnp.float32(2.0)}}
    student = np.array([1.0, 0.9375, 0.8333, 0.625, 0.0])
    grid = ode_pairs.ode_grid(student, 12, 3.0)
    switch = grid[grid < BOUNDARY].max()
    assert BOUNDARY > switch > student[2]  # the hand-over lies between two recorded levels
    got = ode_pairs.teacher_ode(point_mass_apply, teacher, jnp.asarray(x_T, jnp.float32),
                                jnp.asarray(ctx[0], jnp.float32), jnp.asarray(ctx[1], jnp.float32),
                                grid, np.round(student, 12), BOUNDARY, (4.0, 3.0))
    want = closed_form(x_T, c, n, student, switch, 1.0, 2.0, 4.0, 3.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_ode_grid_passes_through_the_student_levels():
    student = DMDConfig().sigmas.astype(np.float64)
    grid = ode_pairs.ode_grid(student, 40, 3.0)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and np.all(np.diff(grid) < 0)
    assert set(np.round(student, 12)) <= set(grid)
    assert len(grid) <= 41 + len(student)


def test_pair_batches_are_epochs_of_a_permutation():
    pairs = {"prompt": np.arange(10)}
    seen = np.concatenate([ode_pairs.pair_batch(pairs, u, 5, seed=0) for u in range(2)])
    assert sorted(seen) == list(range(10))  # one epoch: every pair once
    again = ode_pairs.pair_batch(pairs, 1, 5, seed=0)
    np.testing.assert_array_equal(again, seen[5:])  # a pure function of the update index
    assert not np.array_equal(ode_pairs.pair_batch(pairs, 2, 5, seed=0), seen[:5]) or \
        not np.array_equal(ode_pairs.pair_batch(pairs, 3, 5, seed=0), seen[5:])  # new epoch order


def test_cached_pairs_are_reused_only_for_the_same_settings(tmp_path):
    s = ode_pairs.PairSettings(4, 8, 3.0, 0, (1.0, 0.0), 3.0, 3.0, BOUNDARY, "t")
    calls = []

    def make():
        calls.append(1)
        return {"x": np.full((4, 2, 3), len(calls), np.float32), "prompt": np.arange(4)}

    path = tmp_path / ode_pairs.PAIRS_FILE
    first = ode_pairs.load_or_make(path, s, make)
    again = ode_pairs.load_or_make(path, s, make)
    np.testing.assert_array_equal(first["x"], again["x"])
    assert len(calls) == 1
    other = ode_pairs.load_or_make(path, dataclasses.replace(s, ode_steps=9), make)
    assert len(calls) == 2 and other["x"][0, 0, 0] == 2.0


# ---- the regression term in the generator loss ----

def linear_apply(params, x, t, ctx):
    """v = w * x + b * t-scaled bias: enough structure to check the endpoint formula."""
    sigma = (t / 1000.0).reshape((-1,) + (1,) * (x.ndim - 1))
    return params["w"] * x + params["b"] * sigma + 0.0 * ctx[:, :1, :1, None, None]


@pytest.mark.parametrize("steps,stage_name", [((1000.0,), "high"), ((1000.0, 750.0, 500.0, 250.0), "high"),
                                              ((1000.0, 750.0, 500.0, 250.0), "low")])
def test_regression_loss_is_the_endpoint_mse_at_the_exit_step(steps, stage_name):
    cfg = DMDConfig(raw_timesteps=steps, regression_weight=2.0)
    stage = make_stage(cfg, stage_name)
    setup = StageSetup(stage, cfg.sigmas, cfg.sample_config().renoise_targets(),
                       cfg.num_high_steps, cfg.shift, cfg.boundary, 1.0, 1.0, 2.0)
    shape = (2, 1, 1, 2, 2)
    k = stage.first
    ode_x = RNG.standard_normal((shape[0], len(cfg.sigmas), *shape[1:]))
    ctx = jnp.zeros((2, 1, 1))
    gen = {"w": jnp.float32(0.3), "b": jnp.float32(-0.7)}
    frozen = gen if stage.first > 0 else None
    got = regression_loss(linear_apply, gen, frozen, setup, jnp.asarray(ode_x, jnp.float32), ctx,
                          jnp.int32(k))
    sigma, tau = float(cfg.sigmas[k]), float(setup.targets[k])
    x_k = ode_x[:, k]
    v = 0.3 * x_k - 0.7 * sigma
    target = ode_x[:, setup.endpoint_index]
    assert setup.endpoint_index == (cfg.num_high_steps if stage.tau > 0 else len(steps))
    want = np.mean((x_k - (sigma - tau) * v - target) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_generator_loss_adds_the_weighted_regression_term():
    cfg = DMDConfig(raw_timesteps=(1000.0,), boundary=0.0)
    stage = make_stage(cfg, "high")
    shape = (2, 1, 1, 2, 2)
    setup = StageSetup(stage, cfg.sigmas, cfg.sample_config().renoise_targets(), 1, cfg.shift,
                       cfg.boundary, 1.0, 1.0, 0.5)
    gen = {"w": jnp.float32(0.3), "b": jnp.float32(-0.7)}
    critic = {"w": jnp.float32(0.1), "b": jnp.float32(0.2)}
    noise = jnp.asarray(RNG.standard_normal(shape), jnp.float32)
    ctx = jnp.zeros((2, 1, 1))
    ode_x = jnp.asarray(RNG.standard_normal((2, 2, *shape[1:])), jnp.float32)
    key = jax.random.PRNGKey(0)
    args = (gen, critic, critic, None, linear_apply, linear_apply, setup, noise, ctx, ctx, key)
    plain, m0 = generator_loss(*args)
    both, m1 = generator_loss(*args, (ode_x, ctx))
    reg = regression_loss(linear_apply, gen, None, setup, ode_x, ctx, jnp.int32(0))
    np.testing.assert_allclose(both - plain, 0.5 * reg, rtol=1e-5)
    np.testing.assert_allclose(m1["regression_loss"], reg)
    assert "regression_loss" not in m0
    off = dataclasses.replace(setup, regression_weight=0.0)
    np.testing.assert_allclose(generator_loss(*args[:6], off, *args[7:], (ode_x, ctx))[0], plain)
