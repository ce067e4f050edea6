"""The jitted dual-expert loop against a reference loop built from diffusers components."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler
from flax import nnx

from convert.keymaps import dit_keymap
from torch_refs import diffusers_dit, state_dict_numpy
from wanjax import sampling
from wanjax.config import DiTConfig
from wanjax.io.params import load_flat_params
from wanjax.models.dit import WanDiT
from wanjax.sampling.loop import SampleConfig, dit_apply, make_sampler, make_swapping_sampler

CFG = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, in_dim=4, out_dim=4,
                text_dim=16, freq_dim=16, text_len=10)
SHAPE = (1, 4, 3, 4, 6)


def _experts():
    refs, params, graphdef = [], [], None
    for seed in (0, 1):  # high, low
        ref = diffusers_dit(CFG, seed)
        ours = WanDiT(CFG, rngs=nnx.Rngs(0))
        load_flat_params(ours, dit_keymap(CFG, "diffusers").to_ours(state_dict_numpy(ref)))
        graphdef, state = nnx.split(ours)
        refs.append(ref)
        params.append(state)
    return refs, params, graphdef


@pytest.fixture(scope="module")
def setup():
    refs, params, graphdef = _experts()
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(SHAPE).astype(np.float32)
    ctx = np.zeros((1, CFG.text_len, CFG.text_dim), np.float32)
    neg = np.zeros_like(ctx)
    ctx[:, :6] = rng.standard_normal((1, 6, CFG.text_dim))
    neg[:, :3] = rng.standard_normal((1, 3, CFG.text_dim))
    return refs, params, graphdef, noise, ctx, neg


def _reference_loop(refs, noise, ctx, neg, steps, shift, g_high, g_low, boundary):
    """Official A14B sampling written with diffusers parts: UniPC on the official sigma grid,
    the high expert while t >= boundary * 1000, two CFG passes per step."""
    sched = UniPCMultistepScheduler(
        num_train_timesteps=1000, solver_order=2, prediction_type="flow_prediction",
        predict_x0=True, solver_type="bh2", lower_order_final=True, use_flow_sigmas=True,
        flow_shift=shift, final_sigmas_type="zero",
    )
    sched.set_timesteps(sigmas=np.linspace(sampling.SIGMA_MAX, 0.0, steps + 1)[:-1])
    latents = torch.from_numpy(noise)
    c, n = torch.from_numpy(ctx), torch.from_numpy(neg)
    with torch.no_grad():
        for t in sched.timesteps:
            high = t >= boundary * 1000
            model, g = (refs[0], g_high) if high else (refs[1], g_low)
            tb = t.reshape(1)
            v_c = model(latents, tb, c, return_dict=False)[0]
            v_u = model(latents, tb, n, return_dict=False)[0]
            latents = sched.step(v_u + g * (v_c - v_u), t, latents, return_dict=False)[0]
    return latents.numpy()


def test_a14b_default_split():
    assert SampleConfig().num_high_steps() == 26  # 26 high-noise steps, then 14 low-noise


@pytest.mark.parametrize("steps", [40])
def test_matches_diffusers_reference_loop(setup, steps):
    refs, params, graphdef, noise, ctx, neg = setup
    cfg = SampleConfig(num_steps=steps, shift=12.0, guide_high=4.0, guide_low=3.0, boundary=0.875)
    assert 0 < cfg.num_high_steps() < steps  # the switch happens inside the run
    apply = dit_apply(graphdef)
    sample = make_sampler(apply, apply, cfg)
    ours = np.asarray(sample(params[0], params[1], noise, ctx, neg, jax.random.key(0)))
    expected = _reference_loop(refs, noise, ctx, neg, steps, 12.0, 4.0, 3.0, 0.875)
    assert np.abs(ours - expected).max() / np.abs(expected).max() <= 1e-4


def test_second_call_does_not_recompile_and_modes_agree(setup):
    _, params, graphdef, noise, ctx, neg = setup
    apply = dit_apply(graphdef)
    batched = make_sampler(apply, apply, SampleConfig(num_steps=6))
    out1 = batched(params[0], params[1], noise, ctx, neg, jax.random.key(0))
    out2 = batched(params[0], params[1], noise + 1, ctx * 2, neg, jax.random.key(1))
    assert batched._cache_size() == 1
    assert not np.allclose(out1, out2)
    two_pass = make_sampler(apply, apply, SampleConfig(num_steps=6, cfg_mode="two_pass"))
    np.testing.assert_allclose(two_pass(params[0], params[1], noise, ctx, neg, jax.random.key(0)),
                               out1, rtol=1e-5, atol=1e-5)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    swapping = make_swapping_sampler(apply, apply, SampleConfig(num_steps=6), device, device)
    np.testing.assert_allclose(swapping(params[0], params[1], noise, ctx, neg, jax.random.key(0)),
                               out1, rtol=1e-5, atol=1e-5)


def test_few_step_student_mode_uses_no_guidance(setup):
    _, params, graphdef, noise, ctx, _ = setup
    cfg = SampleConfig(timesteps=(1000, 750, 500, 250), shift=5.0, solver="x0_renoise",
                       guide_high=1.0, guide_low=1.0)
    assert cfg.num_high_steps() == 2  # 1000, 937.5 | 833.3, 625
    apply = dit_apply(graphdef)
    sample = make_sampler(apply, apply, cfg)
    key = jax.random.key(3)
    out = np.asarray(sample(params[0], params[1], noise, ctx, None, key))
    # Hand-rolled rollout: x0 = x - sigma v; re-noise to the next sigma with fresh noise.
    sig = np.asarray(cfg.schedule().sigmas, np.float64)
    x = noise.astype(np.float64)
    for i in range(4):
        model = nnx.merge(graphdef, params[0] if i < 2 else params[1])
        v = np.asarray(model(jnp.asarray(x, jnp.float32), jnp.full((1,), sig[i] * 1000), ctx))
        x0 = x - sig[i] * v
        if i < 3:
            eps = np.asarray(jax.random.normal(jax.random.fold_in(key, i), SHAPE))
            x = (1 - sig[i + 1]) * x0 + sig[i + 1] * eps
        else:
            x = x0
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-4)
