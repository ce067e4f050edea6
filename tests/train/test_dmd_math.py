"""DMD building blocks against their definitions (hand-made cases, float64 numpy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from train import dmd_math
from train.dmd_config import DMDConfig
from train.dmd_losses import StageSetup, generate, route, step_endpoint
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


def test_phased_critic_loss_regresses_the_bridge_tweedie_mean():
    """tau > 0: the loss is the endpoint error of the critic's Tweedie mean over sigma^2 (float64
    reference written from the bridge q(x_sigma | x_tau) = N(alpha x_tau, beta^2) and the score
    of a velocity), and it vanishes at the velocity whose Tweedie mean is x_tau."""
    tau = 0.8333
    x_tau, eps, v = RNG.standard_normal((3, 3, 6))
    sigma = np.array([0.85, 0.93, 0.995])
    alpha = (1 - sigma) / (1 - tau)
    beta2 = sigma**2 - (alpha * tau) ** 2
    x_t = alpha[:, None] * x_tau + np.sqrt(beta2)[:, None] * eps
    score = -(x_t + (1 - sigma[:, None]) * v) / sigma[:, None]
    mean = (x_t + beta2[:, None] * score) / alpha[:, None]
    expected = np.mean(((mean - x_tau) / sigma[:, None]) ** 2)
    f = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    got = dmd_math.critic_loss(f(v), f(x_t), f(x_tau), f(sigma), tau)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    best = dmd_math.velocity_target(f(x_t), f(x_tau), f(sigma), tau)
    assert float(dmd_math.critic_loss(best, f(x_t), f(x_tau), f(sigma), tau)) < 1e-8


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


@pytest.mark.parametrize("moe_mode,handover", [("phased", "bridge"), ("joint", "bridge"),
                                               ("phased", "x0_bridge"), ("phased", "x0_renoise")])
def test_backward_simulation_reproduces_the_sampler_bit_for_bit(moe_mode, handover):
    (gd, high), (_, low) = _experts()
    cfg = DMDConfig(moe_mode=moe_mode, handover=handover)
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


def test_scores_are_routed_where_a_stage_reaches_both_experts():
    """Teacher scores at a noise level come from the expert that owns it (dmd issue)."""
    from train.trainer import Networks, _stage_params

    nets = Networks(None, None, {"high": "H", "low": "L"}, {}, 0.875)
    # 4 steps: stage 1 draws sigma in (sigma_b = 0.833, 1), across the boundary at 0.875
    cfg = DMDConfig()
    high = make_stage(cfg, "high")
    lo, hi = high.sigma_range(cfg.shift)
    assert lo < 0.875 < hi and high.crosses(0.875, cfg.shift)
    gen, critic, real, frozen = _stage_params(cfg, "high", nets, {})
    assert (gen, critic, real, frozen) == ("H", "H", {"high": "H", "low": "L"}, None)
    # stage 2 stays below the boundary: the low teacher alone, fed by the stage-1 student
    assert not make_stage(cfg, "low").crosses(0.875, cfg.shift)
    assert _stage_params(cfg, "low", nets, {"high": "S"}) == ("L", "L", "L", "S")
    # a 1-step student is all high-noise expert, but its losses cover every noise level:
    # real score and critic are both routed per sample
    one = DMDConfig(raw_timesteps=(1000.0,))
    assert one.stages() == ("high",)
    gen, critic, real, _ = _stage_params(one, "high", nets, {})
    assert gen == "H" and critic == real == {"high": "H", "low": "L"}


@pytest.mark.parametrize("handover", ["x0_bridge", "x0_renoise"])
def test_x0_handover_scores_the_high_stage_over_the_whole_range(handover):
    """handover='x0_*': the high stage's output is its x0 prediction, drawn over every noise
    level and scored by both experts (real score and critic); the low stage is the bridge run's;
    the sampler hands over the bridge latent (x0_bridge) or renoises with fresh noise."""
    from train.trainer import Networks, _stage_params

    nets = Networks(None, None, {"high": "H", "low": "L"}, {}, 0.875)
    bridge, x0 = DMDConfig(), DMDConfig(handover=handover)
    high = make_stage(x0, "high")
    assert (high.first, high.stop, high.tau, high.raw_lo, high.raw_hi) == (0, 2, 0.0, 0.02, 0.98)
    assert make_stage(x0, "low") == make_stage(bridge, "low")
    assert _stage_params(x0, "high", nets, {}) == (
        "H", {"high": "H", "low": "L"}, {"high": "H", "low": "L"}, None)
    assert _stage_params(x0, "low", nets, {"high": "S"}) == ("L", "L", "L", "S")
    assert x0.sample_config().phased == (handover == "x0_bridge") and bridge.sample_config().phased
    with pytest.raises(ValueError, match="phased setting"):
        DMDConfig(moe_mode="joint", handover=handover)

    # the exit step's output is x0 = x - sigma v, whatever the sampler's target for the step
    (gd, hp), _ = _experts()
    apply = dit_apply(gd)
    cfg = DMDConfig(raw_timesteps=(1000.0, 500.0), handover=handover)
    setup = StageSetup(make_stage(cfg, "high"), cfg.sigmas, cfg.sample_config().renoise_targets(),
                       cfg.num_high_steps, cfg.shift, cfg.boundary, 4.0, 3.0)
    x = jax.random.normal(jax.random.key(3), (1, 3, 2, 4, 4))
    ctx = jnp.zeros((1, 4, 8))
    got = step_endpoint(apply, hp, None, setup, x, ctx, 0)
    v = apply(hp, x, jnp.full((1,), 1000.0), ctx)
    np.testing.assert_allclose(np.asarray(got), np.asarray(x - v), rtol=0, atol=1e-6)


def test_guidance_follows_the_expert_that_owns_the_noise_level():
    from train.dmd_losses import _guidance

    cfg = DMDConfig()
    setup = StageSetup(make_stage(cfg, "high"), cfg.sigmas, cfg.sample_config().renoise_targets(),
                       cfg.num_high_steps, cfg.shift, cfg.boundary, 4.0, 3.0)
    g = np.asarray(_guidance(setup, jnp.array([0.875, 0.87499, 0.95]))).ravel()
    np.testing.assert_array_equal(g, [4.0, 3.0, 4.0])


def test_noise_levels_keep_their_marginal_when_the_batch_draws_its_expert():
    """Across the boundary each batch is scored by one expert (its `side`), but every sample's
    noise level still follows sigma = shift(u), u ~ U(raw_lo, raw_hi)."""
    from train.dmd_losses import sample_noise_level

    cfg = DMDConfig(raw_timesteps=(1000.0,))  # one step: the stage covers [t_min, t_max]
    st = make_stage(cfg, "high")
    setup = StageSetup(st, cfg.sigmas, cfg.sample_config().renoise_targets(),
                       cfg.num_high_steps, cfg.shift, cfg.boundary, 4.0, 3.0)
    draw = jax.jit(jax.vmap(lambda k: sample_noise_level(setup, k, 8)))
    sigma, side = draw(jax.random.split(jax.random.key(0), 20000))
    sigma, side = np.asarray(sigma), np.asarray(side)
    # the batch's side is every sample's side, by the sampler's own rule t >= boundary * 1000
    np.testing.assert_array_equal(sigma * 1000.0 >= 875.0, np.broadcast_to(side[:, None], sigma.shape))
    u = sigma / (cfg.shift - (cfg.shift - 1.0) * sigma)  # back to the raw, uniform variable
    qs = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    np.testing.assert_allclose(np.quantile(u, qs), st.raw_lo + (st.raw_hi - st.raw_lo) * qs,
                               atol=0.01)
    # a stage that stays on one side draws per sample and names no side
    low = make_stage(DMDConfig(), "low")
    setup_low = StageSetup(low, cfg.sigmas, cfg.sample_config().renoise_targets(), 1, cfg.shift,
                           cfg.boundary, 4.0, 3.0)
    sigma_low, no_side = sample_noise_level(setup_low, jax.random.key(1), 8)
    assert no_side is None and np.all(np.asarray(sigma_low) < 0.875)


def test_route_with_a_batch_side_runs_only_that_expert():
    (gd, hp), (_, lp) = _experts()
    apply = dit_apply(gd)
    x = jax.random.normal(jax.random.key(0), (2, 3, 2, 4, 4))
    ctx = jnp.zeros((2, 4, 8))
    t = jnp.array([900.0, 950.0])
    for side, want in ((True, hp), (False, lp)):
        got = jax.jit(lambda s: route(apply, {"high": hp, "low": lp}, x, t, ctx, 0.875, s))(side)
        np.testing.assert_allclose(np.asarray(got), np.asarray(apply(want, x, t, ctx)),
                                   rtol=1e-5, atol=1e-5)  # jit vs eager rounding only


def test_noise_shift_warps_only_the_loss_noise_levels():
    """`noise_shift` changes where the DMD / critic losses draw sigma, not the student's grid;
    phased stages still keep their draws on their own side of the hand-over level."""
    from train.dmd_losses import sample_noise_level
    from train.trainer import stage_setup

    base = DMDConfig(raw_timesteps=(1000.0, 500.0))
    cfg = DMDConfig(raw_timesteps=(1000.0, 500.0), noise_shift=1.0)
    np.testing.assert_array_equal(cfg.sigmas, base.sigmas)
    assert cfg.sample_config() == base.sample_config()
    tau = float(cfg.sigmas[1])  # 5 * 0.5 / 3 = 0.8333, the hand-over level
    for name, inside in (("high", lambda s: s > tau), ("low", lambda s: s < tau)):
        setup = stage_setup(cfg, name)
        assert setup.shift == 1.0
        draw = jax.jit(jax.vmap(lambda k, s=setup: sample_noise_level(s, k, 8)[0]))
        sigma = np.asarray(draw(jax.random.split(jax.random.key(3), 4000))).ravel()
        assert np.all(inside(sigma))
        st = setup.stage  # shift 1: sigma = u, uniform on the stage's range
        qs = np.array([0.1, 0.5, 0.9])
        np.testing.assert_allclose(np.quantile(sigma, qs), st.raw_lo + (st.raw_hi - st.raw_lo) * qs,
                                   atol=0.01)
    with pytest.raises(ValueError, match="noise_shift"):
        DMDConfig(noise_shift=0.0)
