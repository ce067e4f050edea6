"""The GAN term's real samples on the toy world (gan_real='data')."""

import types

import numpy as np

from train.dmd_config import DMDConfig
from train.toy import world as toy_world
from train.trainer import StageRunner
from train.world import toy_world as make_toy_world


def test_toy_renders_are_clean_videos_of_their_prompts_and_reproducible():
    source = make_toy_world().real_samples
    x, prompts = source(5, 16, 0)
    assert x.shape == (16, 3, 3, 20, 20) and x.dtype == np.float32
    assert set(prompts) <= set(toy_world.all_prompts()) and len(set(prompts)) > 4
    assert x.min() >= -1.0 and x.max() <= 1.0
    # every sample is within the real-data tolerance of one of its prompt's clean templates
    for xi, p in zip(x, prompts, strict=True):
        labels = np.asarray([toy_world.parse_prompt(p)] * toy_world.NUM_MODES)
        templates = toy_world.render_modes(labels, np.arange(toy_world.NUM_MODES))
        assert np.sqrt(((templates - xi) ** 2).mean(axis=(1, 2, 3, 4))).min() < 0.07
    again, same = source(5, 16, 0)
    np.testing.assert_array_equal(again, x)
    assert same == prompts
    assert not np.array_equal(source(6, 16, 0)[0], x)
    assert not np.array_equal(source(5, 16, 1)[0], x)


def test_real_batch_is_brought_to_the_stage_endpoint_on_the_bridge():
    """At a phased stage's endpoint tau > 0 the real latents are x_tau = (1 - tau) x0 + tau eps
    with fresh unit noise; at tau = 0 they are the clean renders."""
    world = make_toy_world()
    cfg = DMDConfig(batch_size=64, gan_weight=1.0, gan_real="data")
    runner = types.SimpleNamespace(cfg=cfg, world=world)
    x0, prompts = world.real_samples(3, 64, cfg.seed)
    clean, ctx = StageRunner._gan_real_batch(runner, None, 3, 2, 0.0)
    np.testing.assert_array_equal(np.asarray(clean), x0)
    np.testing.assert_array_equal(np.asarray(ctx), world.contexts.encode(prompts))
    tau = 0.8
    noised, _ = StageRunner._gan_real_batch(runner, None, 3, 1, tau)
    eps = (np.asarray(noised) - (1.0 - tau) * x0) / tau
    assert abs(eps.mean()) < 0.01 and abs(eps.std() - 1.0) < 0.01
    assert abs(np.corrcoef(eps.ravel(), x0.ravel())[0, 1]) < 0.01
