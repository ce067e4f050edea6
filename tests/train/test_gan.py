"""The DMD2 GAN term: losses against float64 formulas, its wiring into both losses, routing."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import toy
from train import gan
from train.dmd_config import DMDConfig
from train.dmd_losses import StageSetup, critic_loss, generator_loss, route, sample_noise_level
from train.stages import make_stage
from wanjax.models.dit import WanDiT

RNG = np.random.default_rng(0)
SHAPE = (2, 1, 2, 1, 4)  # [B, C, F, H, W]: 8 values per sample, seen as 2 tokens (frames) of 4


def softplus64(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64))


def head_logits64(head, tokens):
    """float64 reference of the head: LayerNorm without affine, Linear, SiLU, Linear."""
    h = {k: np.asarray(v, np.float64) for k, v in head.items()}
    x = np.asarray(tokens, np.float64)
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    a = x @ h["w1"] + h["b1"]
    return ((a / (1 + np.exp(-a))) @ h["w2"] + h["b2"])[..., 0]


def random_head(dim=4, hidden=3):
    head = gan.init_head(jax.random.PRNGKey(1), dim, hidden)
    head["w2"] = jnp.asarray(RNG.standard_normal((hidden, 1)), jnp.float32)  # not the zero init
    head["b2"] = jnp.asarray([0.3], jnp.float32)
    return head


def test_losses_are_binary_cross_entropy():
    real, fake = RNG.standard_normal((3, 5)), RNG.standard_normal((3, 5))
    want_d = np.mean(-np.log(1 / (1 + np.exp(-real)))) + np.mean(-np.log(1 - 1 / (1 + np.exp(-fake))))
    np.testing.assert_allclose(gan.critic_loss(jnp.asarray(real), jnp.asarray(fake)), want_d, rtol=1e-5)
    want_g = np.mean(-np.log(1 / (1 + np.exp(-fake))))
    np.testing.assert_allclose(gan.generator_loss(jnp.asarray(fake)), want_g, rtol=1e-5)


def test_head_scores_every_token_and_starts_at_zero():
    tokens = RNG.standard_normal((2, 3, 4))
    head = random_head()
    np.testing.assert_allclose(gan.logits(head, jnp.asarray(tokens, jnp.float32)),
                               head_logits64(head, tokens), rtol=1e-4, atol=1e-5)
    fresh = gan.init_head(jax.random.PRNGKey(0), 4, 3)
    assert np.all(np.asarray(gan.logits(fresh, jnp.asarray(tokens, jnp.float32))) == 0.0)


def linear_apply(params, x, t, ctx):
    sigma = (t / 1000.0).reshape((-1,) + (1,) * (x.ndim - 1))
    return params["w"] * x + params["b"] * sigma + 0.0 * ctx[:, :1, :1, None, None]


def linear_feats(params, x, t, ctx):
    """The same velocity plus 'tokens': the input itself, as [B, 2, 4]."""
    return linear_apply(params, x, t, ctx), x.reshape(x.shape[0], 2, 4) * params["w"]


def setup_for(gan_weight, gan_critic_weight=0.5):
    cfg = DMDConfig(raw_timesteps=(1000.0,), boundary=0.0)
    return cfg, StageSetup(make_stage(cfg, "high"), cfg.sigmas, cfg.sample_config().renoise_targets(),
                           1, cfg.shift, cfg.boundary, 1.0, 1.0, 0.0, gan_weight, gan_critic_weight)


GEN = {"w": jnp.float32(0.3), "b": jnp.float32(-0.7)}
CRITIC = {"w": jnp.float32(0.1), "b": jnp.float32(0.2)}
NOISE = jnp.asarray(RNG.standard_normal(SHAPE), jnp.float32)
CTX = jnp.zeros((2, 1, 1))
KEY = jax.random.PRNGKey(0)


def _gen_loss(gen, setup, disc):
    return generator_loss(gen, CRITIC, CRITIC, None, linear_apply, linear_apply, setup, NOISE, CTX,
                          CTX, KEY, None, disc, linear_feats)


def test_generator_gan_term_is_the_weighted_non_saturating_loss_on_the_noised_sample():
    _, setup = setup_for(0.25)
    head = random_head()
    plain, m0 = _gen_loss(GEN, dataclasses.replace(setup, gan_weight=0.0), head)
    both, m1 = _gen_loss(GEN, setup, head)
    assert "gan_gen_loss" not in m0
    np.testing.assert_allclose(m1["dmd_loss"], m0["dmd_loss"], rtol=1e-6)  # DMD part unchanged
    # rebuild the critic's input from the same keys: x_gen at 1 step is noise - v, then noised
    gen_key, t_key, eps_key = jax.random.split(KEY, 3)
    sigma, _ = sample_noise_level(setup, t_key, 2)
    eps = jax.random.normal(eps_key, SHAPE, jnp.float32)
    x_gen = np.asarray(NOISE) - (0.3 * np.asarray(NOISE) - 0.7)
    s = np.asarray(sigma, np.float64).reshape(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x_gen + s * np.asarray(eps)
    want = np.mean(softplus64(-head_logits64(head, x_t.reshape(2, 2, 4) * 0.1)))
    np.testing.assert_allclose(m1["gan_gen_loss"], want, rtol=1e-4)
    np.testing.assert_allclose(both - plain, 0.25 * want, rtol=1e-4)
    # its gradient reaches the generator through the critic
    g_plain = jax.grad(lambda g: _gen_loss(g, dataclasses.replace(setup, gan_weight=0.0), head)[0])(GEN)
    g_both = jax.grad(lambda g: _gen_loss(g, setup, head)[0])(GEN)
    assert abs(float(g_both["w"] - g_plain["w"])) > 1e-6


def test_critic_gan_term_tells_noised_real_from_generated():
    _, setup = setup_for(0.25, gan_critic_weight=0.5)
    head = random_head()
    real_x = jnp.asarray(RNG.standard_normal(SHAPE), jnp.float32)
    args = (CRITIC, GEN, None, linear_apply, setup, NOISE, CTX, KEY)
    plain, _ = critic_loss(*args)
    both, m = critic_loss(*args, (real_x, CTX), head, linear_feats)
    np.testing.assert_allclose(m["critic_loss"], plain, rtol=1e-6)  # flow matching unchanged
    gen_key, t_key, eps_key = jax.random.split(KEY, 3)
    sigma, _ = sample_noise_level(setup, t_key, 2)
    eps = jax.random.normal(eps_key, SHAPE, jnp.float32)
    real_eps = jax.random.normal(jax.random.fold_in(eps_key, 1), SHAPE, jnp.float32)
    s = np.asarray(sigma, np.float64).reshape(-1, 1, 1, 1, 1)
    x_gen = np.asarray(NOISE) - (0.3 * np.asarray(NOISE) - 0.7)
    fake_t = (1 - s) * x_gen + s * np.asarray(eps)
    real_t = (1 - s) * np.asarray(real_x) + s * np.asarray(real_eps)
    lf = head_logits64(head, fake_t.reshape(2, 2, 4) * 0.1)
    lr = head_logits64(head, real_t.reshape(2, 2, 4) * 0.1)
    want = np.mean(softplus64(-lr)) + np.mean(softplus64(lf))
    np.testing.assert_allclose(m["gan_critic_loss"], want, rtol=1e-4)
    np.testing.assert_allclose(both - plain, 0.5 * want, rtol=1e-4)
    grads = jax.grad(lambda c, d: critic_loss(c, *args[1:], (real_x, CTX), d, linear_feats)[0],
                     argnums=(0, 1))(CRITIC, head)
    assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads[1]))


def _gan_levels(setup, n_arrays):
    """The GAN term's own draws, rebuilt from the losses' keys: (sigma [B], [eps per array])."""
    level_key, eps_key = jax.random.split(jax.random.fold_in(KEY, 1))
    sigma, _ = sample_noise_level(setup.gan_draws(), level_key, SHAPE[0])
    eps = [np.asarray(jax.random.normal(k, SHAPE, jnp.float32))
           for k in jax.random.split(eps_key, n_arrays)]
    return np.asarray(sigma, np.float64).reshape(-1, 1, 1, 1, 1), eps


def test_gan_on_its_own_noise_levels_leaves_the_dmd_and_flow_terms_alone():
    """`gan_shift`: the DMD and flow-matching terms are those of the run without the GAN (same
    keys, same levels); the GAN term sees the samples at its own levels, from its own shift."""
    _, shared = setup_for(0.25, gan_critic_weight=0.5)
    setup = dataclasses.replace(shared, gan_shift=1.0)
    assert setup.gan_apart and not shared.gan_apart
    assert not dataclasses.replace(setup, gan_weight=0.0).gan_apart
    head = random_head()
    x_gen = np.asarray(NOISE) - (0.3 * np.asarray(NOISE) - 0.7)
    # generator
    _, m0 = _gen_loss(GEN, dataclasses.replace(setup, gan_weight=0.0), head)
    both, m1 = _gen_loss(GEN, setup, head)
    np.testing.assert_allclose(m1["dmd_loss"], m0["dmd_loss"], rtol=1e-6)
    s, (eps,) = _gan_levels(setup, 1)
    x_g = (1 - s) * x_gen + s * eps
    want = np.mean(softplus64(-head_logits64(head, x_g.reshape(2, 2, 4) * 0.1)))
    np.testing.assert_allclose(m1["gan_gen_loss"], want, rtol=1e-4)
    np.testing.assert_allclose(both - m0["gen_loss"], 0.25 * want, rtol=1e-4)
    g = jax.grad(lambda p: _gen_loss(p, setup, head)[0])(GEN)
    g0 = jax.grad(lambda p: _gen_loss(p, dataclasses.replace(setup, gan_weight=0.0), head)[0])(GEN)
    assert abs(float(g["w"] - g0["w"])) > 1e-6  # the GAN gradient reaches the generator
    # critic
    real_x = jnp.asarray(RNG.standard_normal(SHAPE), jnp.float32)
    args = (CRITIC, GEN, None, linear_apply, setup, NOISE, CTX, KEY)
    plain, _ = critic_loss(*args)
    total, m = critic_loss(*args, (real_x, CTX), head, linear_feats)
    np.testing.assert_allclose(m["critic_loss"], plain, rtol=1e-6)
    s, (eps_fake, eps_real) = _gan_levels(setup, 2)
    lf = head_logits64(head, ((1 - s) * x_gen + s * eps_fake).reshape(2, 2, 4) * 0.1)
    lr = head_logits64(head, ((1 - s) * np.asarray(real_x) + s * eps_real).reshape(2, 2, 4) * 0.1)
    want = np.mean(softplus64(-lr)) + np.mean(softplus64(lf))
    np.testing.assert_allclose(m["gan_critic_loss"], want, rtol=1e-4)
    np.testing.assert_allclose(total - plain, 0.5 * want, rtol=1e-4)


POSITION = np.array([[0.0, 0.0, 0.0, 0.0], [0.8, -0.5, 0.3, 0.0]])  # per-frame offsets


def positional_feats(params, x, t, ctx):
    """linear_feats plus a per-frame vector, as a trunk with position embeddings has: a per-token
    head over position-free tokens scores a reversed video like the original (and the head's
    LayerNorm would remove a constant offset)."""
    v, tokens = linear_feats(params, x, t, ctx)
    return v, tokens + jnp.asarray(POSITION, jnp.float32)


@pytest.mark.parametrize("gan_shift", [None, 1.0])
def test_reversed_real_samples_are_extra_fakes_for_the_discriminator_only(gan_shift):
    """`gan_reversed_weight`: the critic's BCE gains w * -log(1 - D) on the noised real samples
    with their frames in reverse order (here each token is one frame), in both GAN layouts; the
    flow-matching term and the generator's loss are those of the run without it."""
    _, base = setup_for(0.25, gan_critic_weight=0.5)
    base = dataclasses.replace(base, gan_shift=gan_shift)
    setup = dataclasses.replace(base, gan_reversed_weight=0.7)
    head = random_head()
    real_x = jnp.asarray(RNG.standard_normal(SHAPE), jnp.float32)
    args = (CRITIC, GEN, None, linear_apply)
    plain, m0 = critic_loss(*args, base, NOISE, CTX, KEY, (real_x, CTX), head, positional_feats)
    total, m = critic_loss(*args, setup, NOISE, CTX, KEY, (real_x, CTX), head, positional_feats)
    np.testing.assert_allclose(m["critic_loss"], m0["critic_loss"], rtol=1e-6)
    # rebuild the noised real batch from the losses' keys, then play it backwards
    if gan_shift is None:
        _, t_key, eps_key = jax.random.split(KEY, 3)
        sigma, _ = sample_noise_level(setup, t_key, 2)
        s = np.asarray(sigma, np.float64).reshape(-1, 1, 1, 1, 1)
        real_eps = np.asarray(jax.random.normal(jax.random.fold_in(eps_key, 1), SHAPE, jnp.float32))
    else:
        s, (_, real_eps) = _gan_levels(setup, 2)
    real_t = (1 - s) * np.asarray(real_x) + s * real_eps
    backwards = real_t[:, :, ::-1].reshape(2, 2, 4)
    np.testing.assert_array_equal(backwards[:, 0], real_t.reshape(2, 2, 4)[:, 1])
    extra = np.mean(softplus64(head_logits64(head, backwards * 0.1 + POSITION)))
    np.testing.assert_allclose(m["gan_critic_loss"] - m0["gan_critic_loss"], 0.7 * extra, rtol=1e-4)
    np.testing.assert_allclose(total - plain, 0.5 * 0.7 * extra, rtol=1e-4)
    assert 0.0 <= m["gan_reversed_acc"] <= 1.0 and "gan_reversed_acc" not in m0
    # the generator's side is untouched
    np.testing.assert_array_equal(_gen_loss(GEN, setup, head)[0], _gen_loss(GEN, base, head)[0])
    with pytest.raises(ValueError, match="gan_reversed_weight"):
        DMDConfig(gan_reversed_weight=-1.0)


def test_gan_noise_shift_draws_within_the_stage_from_its_own_warp():
    """Phased stages of a 2-step student (DMD draws at the grid's shift 5, GAN at shift 1): the
    GAN's levels stay on the stage's side of the hand-over level and are uniform in sigma over
    the stage's range (shift 1: sigma = u)."""
    from train.trainer import stage_setup

    cfg = DMDConfig(raw_timesteps=(1000.0, 500.0), gan_weight=1.0, gan_noise_shift=1.0)
    for name in ("high", "low"):
        setup = stage_setup(cfg, name)
        assert setup.shift == 5.0 and setup.gan_apart
        lo, hi = setup.stage.sigma_range(setup.shift)
        draws = setup.gan_draws()
        assert draws.stage.sigma_range(1.0) == pytest.approx((lo, hi), abs=1e-12)
        draw = jax.jit(jax.vmap(lambda k, d=draws: sample_noise_level(d, k, 8)[0]))
        sigma = np.asarray(draw(jax.random.split(jax.random.key(5), 4000)), np.float64).ravel()
        assert sigma.min() >= lo - 1e-6 and sigma.max() <= hi + 1e-6
        qs = np.array([0.1, 0.5, 0.9])
        np.testing.assert_allclose(np.quantile(sigma, qs), lo + (hi - lo) * qs, atol=0.01)
    with pytest.raises(ValueError, match="gan_noise_shift"):
        DMDConfig(gan_noise_shift=-1.0)


def test_gan_stages_turn_the_term_off_in_the_other_stages():
    from train.trainer import stage_setup

    cfg = DMDConfig(raw_timesteps=(1000.0, 500.0), gan_weight=1.0, gan_reversed_weight=0.5,
                    gan_stages=("low",))
    high, low = stage_setup(cfg, "high"), stage_setup(cfg, "low")
    assert not high.gan and (high.gan_critic_weight, high.gan_reversed_weight) == (0.0, 0.0)
    assert low.gan and (low.gan_weight, low.gan_reversed_weight) == (1.0, 0.5)
    assert all(stage_setup(dataclasses.replace(cfg, gan_stages=None), n).gan for n in ("high", "low"))
    for bad in [("mid",), (), ("low",)]:  # the last: a 1-step student has only a high stage
        steps = (1000.0,) if bad == ("low",) else (1000.0, 500.0)
        with pytest.raises(ValueError, match="gan_stages"):
            DMDConfig(raw_timesteps=steps, gan_weight=1.0, gan_stages=bad)


def test_route_picks_each_output_of_a_tuple_per_sample():
    def apply(params, x, t, ctx):
        return x * params["a"], jnp.full((x.shape[0], 3, 2), params["a"])

    params = {"high": {"a": jnp.float32(2.0)}, "low": {"a": jnp.float32(-1.0)}}
    x = jnp.ones((2, 1, 1, 1, 1))
    t = jnp.asarray([900.0, 100.0])
    v, tokens = route(apply, params, x, t, CTX, 0.875)
    np.testing.assert_array_equal(np.asarray(v).ravel(), [2.0, -1.0])
    np.testing.assert_array_equal(np.asarray(tokens)[:, 0, 0], [2.0, -1.0])


def test_dit_features_are_the_last_block_tokens_and_leave_the_output_alone():
    model = WanDiT(toy.EXPERT, rngs=nnx.Rngs(0))
    x = jnp.asarray(RNG.standard_normal((2, 3, 3, 20, 20)), jnp.float32)
    t, ctx = jnp.asarray([900.0, 300.0]), jnp.asarray(RNG.standard_normal((2, 4, 32)), jnp.float32)
    out, tokens = model(x, t, ctx, return_features=True)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(model(x, t, ctx)))
    assert tokens.shape == (2, 75, toy.EXPERT.dim) and tokens.dtype == jnp.float32

