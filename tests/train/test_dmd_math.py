"""DMD building blocks against their definitions (hand-made cases, float64 numpy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from train import dmd_math
from train.dmd_config import DMDConfig
from train.dmd_losses import StageSetup, generate, route
from train.rollout import init_state, run_steps
from train.stages import make_stage
from wanjax.config import DiTConfig
from wanjax.models.dit import WanDiT
from wanjax.sampling.loop import dit_apply, make_sampler

RNG = np.random.default_rng(0)


def test_dmd_gradient_matches_definition():
    x_gen = RNG.standard_normal((2, 3, 4))
    x_fake = RNG.standard_normal((2, 3, 4))
    x_real = RNG.standard_normal((2, 3, 4))
    norm = np.abs(x_gen - x_real).reshape(2, -1).mean(1)[:, None, None]  # per sample
    expected = (x_fake - x_real) / (norm + 1e-6)
    got = dmd_math.dmd_gradient(*(jnp.asarray(a, jnp.float32) for a in (x_gen, x_fake, x_real)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_surrogate_loss_gradient_is_g_over_numel():
    x = jnp.asarray(RNG.standard_normal((2, 3, 4)), jnp.float32)
    g = jnp.asarray(RNG.standard_normal((2, 3, 4)), jnp.float32)
    grad = jax.grad(lambda x: dmd_math.dmd_surrogate_loss(x, g))(x)
    np.testing.assert_allclose(grad, g / x.size, rtol=1e-6)


def test_critic_loss_is_flow_matching_at_x0_endpoint():
    x0 = RNG.standard_normal((3, 5))
    eps = RNG.standard_normal((3, 5))
    v = RNG.standard_normal((3, 5))
    sigma = np.array([0.1, 0.5, 0.97])
    x_t = (1 - sigma[:, None]) * x0 + sigma[:, None] * eps  # rectified flow
    expected = np.mean((v - (eps - x0)) ** 2)  # flow matching: v regresses eps - x0
    f = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    got = dmd_math.critic_loss(f(v), f(x_t), f(x0), f(sigma), 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    np.testing.assert_allclose(dmd_math.noise_to(f(x0), 0.0, f(sigma), f(eps)), x_t, atol=1e-6)


@pytest.mark.parametrize("tau", [0.0, 0.8333])
def test_bridge_tweedie_recovers_endpoint(tau):
    """The critic target's Tweedie endpoint is the endpoint itself; tau = 0 gives x - sigma v."""
    x_tau = jnp.asarray(RNG.standard_normal((3, 4)), jnp.float32)
    eps = jnp.asarray(RNG.standard_normal((3, 4)), jnp.float32)
    sigma = jnp.array([0.9, 0.95, 0.99])
    x_t = dmd_math.noise_to(x_tau, tau, sigma, eps)
    v = dmd_math.velocity_target(x_t, x_tau, sigma, tau)
    np.testing.assert_allclose(dmd_math.tweedie_endpoint(x_t, sigma, tau, v), x_tau, atol=2e-5)
    if tau == 0.0:
        np.testing.assert_allclose(dmd_math.tweedie_endpoint(x_t, sigma, 0.0, v),
                                   x_t - sigma[:, None] * v, atol=1e-5)


# ---- backward simulation and expert routing on a tiny Wan DiT ----

CFG = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=3, out_dim=3, text_dim=8,
                freq_dim=16, text_len=4)


def _experts():
    out = []
    for seed in (0, 1):
        m = WanDiT(CFG, rngs=nnx.Rngs(seed))
        m.head.proj.kernel.set_value(jax.random.normal(jax.random.key(seed), m.head.proj.kernel.shape))
        out.append(nnx.split(m))
    return out


@pytest.mark.parametrize("moe_mode", ["phased", "joint"])
def test_backward_simulation_reproduces_the_sampler_bit_for_bit(moe_mode):
    (gd, high), (_, low) = _experts()
    cfg = DMDConfig(moe_mode=moe_mode)
    sample_cfg = cfg.sample_config()
    noise = jax.random.normal(jax.random.key(7), (1, 3, 2, 4, 4))
    ctx = jax.random.normal(jax.random.key(8), (1, 4, 8))
    key = jax.random.key(9)
    apply = dit_apply(gd)
    expected = make_sampler(apply, apply, sample_cfg)(high, low, noise, ctx, None, key)

    n_high = cfg.num_high_steps
    sigmas, targets = cfg.sigmas, sample_cfg.renoise_targets()

    @jax.jit
    def rollout(high, low, noise, ctx, key):
        def model(x, t, i):
            return jax.lax.cond(i < n_high, lambda: apply(high, x, t, ctx),
                                lambda: apply(low, x, t, ctx))

        state = init_state(noise, jnp.asarray(sigmas), jnp.asarray(targets), key)
        return run_steps(model, state, 0, jnp.asarray(len(cfg.raw_timesteps))).x

    np.testing.assert_array_equal(np.asarray(rollout(high, low, noise, ctx, key)),
                                  np.asarray(expected))


def test_stage_split_and_routing_at_the_boundary():
    cfg = DMDConfig()  # raw 1000/750/500/250, shift 5 -> t = 1000, 937.5 | 833.3, 625
    assert cfg.stages() == ("high", "low")
    high, low = make_stage(cfg, "high"), make_stage(cfg, "low")
    assert (high.first, high.stop, low.first, low.stop) == (0, 2, 2, 4)
    assert high.tau == pytest.approx(833.3333 / 1000, abs=1e-6) and low.tau == 0.0
    # noise levels drawn for each stage stay inside its expert's range
    assert 5 * high.raw_lo / (1 + 4 * high.raw_lo) > high.tau
    assert 5 * low.raw_hi / (1 + 4 * low.raw_hi) < high.tau

    (gd, hp), (_, lp) = _experts()
    apply = dit_apply(gd)
    x = jax.random.normal(jax.random.key(0), (3, 3, 2, 4, 4))
    ctx = jnp.zeros((3, 4, 8))
    t = jnp.array([875.0, 874.99, 1000.0])  # t >= 875 is the high-noise expert's
    got = route(apply, {"high": hp, "low": lp}, x, t, ctx, boundary=0.875)
    want_high = apply(hp, x, t, ctx)
    want_low = apply(lp, x, t, ctx)
    np.testing.assert_array_equal(got[0], want_high[0])
    np.testing.assert_array_equal(got[1], want_low[1])
    np.testing.assert_array_equal(got[2], want_high[2])


def test_phased_low_stage_starts_from_the_frozen_high_student():
    """In the low stage, steps before the stage run the frozen stage-1 expert."""
    (gd, hp), (_, lp) = _experts()
    cfg = DMDConfig()
    st = make_stage(cfg, "low")
    setup = StageSetup(st, cfg.sigmas, cfg.sample_config().renoise_targets(), cfg.num_high_steps,
                       cfg.shift, cfg.boundary, 4.0, 3.0)
    apply = dit_apply(gd)
    noise = jax.random.normal(jax.random.key(1), (1, 3, 2, 4, 4))
    ctx = jnp.zeros((1, 4, 8))
    key = jax.random.key(2)
    x_gen, k = jax.jit(lambda: generate(apply, lp, hp, setup, noise, ctx, key))()
    assert int(k) in (2, 3)
    # swapping which params are frozen changes the result: the prefix really used `hp`
    x_swapped, _ = jax.jit(lambda: generate(apply, lp, lp, setup, noise, ctx, key))()
    assert not np.allclose(x_gen, x_swapped)
