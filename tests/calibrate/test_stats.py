"""Statistics collection: each step is recorded by the expert that serves it, as sampling routes."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY, random_student

from train.calibration.data import batches, synthetic_world
from train.calibration.stats import CollectOptions, collect_stats
from train.calibration.trajectory import ExpertRunner, run_trajectory, step_experts
from wanjax.models.embeddings import patchify
from wanjax.sampling.loop import SampleConfig, dit_apply, make_sampler

# shift 1 keeps the raw timesteps: step 1 sits exactly on the boundary (875 >= 875 -> high).
CFG = SampleConfig(timesteps=(1000.0, 875.0, 600.0, 300.0), shift=1.0, solver="x0_renoise",
                   guide_high=1.0, guide_low=1.0, boundary=0.875)


@pytest.fixture(scope="module")
def setup():
    student = random_student(3)
    world = synthetic_world(TINY)
    (batch,) = batches(world, world.prompts[:3], seed=5, batch_size=3)
    return student, batch


def test_routing_matches_the_loop():
    assert step_experts(CFG) == ["high", "high", "low", "low"]
    assert CFG.num_high_steps() == 2


def test_trajectory_equals_make_sampler(setup):
    student, b = setup
    runner = ExpertRunner(student, CFG).bind(b.context, None)
    traj = run_trajectory(runner, CFG, b.noise, b.key)
    gh, ph = nnx.split(student["high"])
    gl, pl = nnx.split(student["low"])
    ref = make_sampler(dit_apply(gh), dit_apply(gl), CFG)(ph, pl, b.noise, jnp.asarray(b.context),
                                                         None, b.key)
    np.testing.assert_allclose(np.asarray(traj.final), np.asarray(ref), rtol=1e-5, atol=1e-5)


def _patch_absmax(x):
    tokens = patchify(jnp.moveaxis(jnp.asarray(x), 1, -1), TINY.patch_size)
    return np.asarray(jnp.max(jnp.abs(tokens.reshape(-1, tokens.shape[-1])), axis=0))


@pytest.mark.parametrize("mode", ["per-expert", "joint"])
def test_each_step_attributed_to_its_expert(setup, mode):
    student, b = setup
    opts = CollectOptions(include=("patch_embedding", "blocks.*"), samples_per_call=4)
    stats, _ = collect_stats(student, CFG, b.noise, b.context, b.negative, b.key,
                             stats_mode=mode, opts=opts)
    # The states each step saw, from an independent rollout of the same sampler.
    traj = run_trajectory(ExpertRunner(student, CFG).bind(b.context, None), CFG, b.noise, b.key)
    owned = {"high": [0, 1], "low": [2, 3]}
    for e in ("high", "low"):
        want = [0, 1, 2, 3] if mode == "joint" else owned[e]
        assert stats[e].steps == want
        layer = stats[e].layers["patch_embedding"]
        assert sorted(layer.per_step) == want
        for i in want:  # the recorded input is that step's state, patchified
            np.testing.assert_allclose(layer.per_step[i].absmax, _patch_absmax(traj.xs[i]),
                                       rtol=1e-6)
        q = stats[e].layers["blocks.1.self_attn.q"]
        tokens = 3 * 2 * 2 * 2  # batch x (2 x 4 x 4 latents / 1x2x2 patches)
        assert all(q.per_step[i].count == tokens for i in want)
        assert q.count == tokens * len(want)
        assert q.xtx.shape == (TINY.dim, TINY.dim)
        np.testing.assert_allclose(np.diag(q.xtx), np.diag(q.xtx).clip(0))  # PSD diagonal
        k = stats[e].layers["blocks.0.cross_attn.k"]  # text tokens, padded to text_len
        assert k.count == 3 * TINY.text_len * len(want)
    if mode == "per-expert":  # high and low saw different states
        assert not np.allclose(stats["high"].layers["patch_embedding"].absmax,
                               stats["low"].layers["patch_embedding"].absmax)


def test_low_expert_statistics_follow_the_quantized_high_expert(setup):
    """Sequential flow: freezing a quantized high expert changes what the low expert records."""
    from train.calibration.layers import LayerOptions, calibrate_layers

    student, b = setup
    opts = CollectOptions(samples_per_call=8)
    fp_stats, _ = collect_stats(student, CFG, b.noise, b.context, None, b.key, record=("high",),
                                opts=opts)
    quant = {"high": nnx.clone(student["high"]), "low": student["low"]}
    calibrate_layers(quant["high"], fp_stats["high"], LayerOptions(algorithm="rtn"), ("blocks.*",))
    before, _ = collect_stats(student, CFG, b.noise, b.context, None, b.key, record=("low",),
                              opts=opts)
    after, _ = collect_stats(quant, CFG, b.noise, b.context, None, b.key, record=("low",),
                             opts=opts)
    a = before["low"].layers["blocks.0.self_attn.q"].absmax
    c = after["low"].layers["blocks.0.self_attn.q"].absmax
    assert not np.allclose(a, c)
    np.testing.assert_allclose(a, c, rtol=0.5)  # same trajectory up to quantization error
