"""Shape-level facts about the DiT: parameter counts, compile caching, input errors, key table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import wanjax
from configs import a14b, ti2v_5b, tiny
from convert.keymaps import dit_keymap
from wanjax.io import checkpoint
from wanjax.io.params import flat_params
from wanjax.models.dit import WanDiT
from wanjax.models.embeddings import timestep_sinusoid


def _param_count(cfg) -> int:
    abstract = nnx.eval_shape(lambda: WanDiT(cfg, rngs=nnx.Rngs(0)))
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def test_a14b_parameter_count_without_allocation():
    assert _param_count(a14b.EXPERT) == 14_288_491_584  # spec 1.1, meta-instantiated official


def test_ti2v_5b_parameter_count():
    assert _param_count(ti2v_5b.MODEL) == 4_999_787_712


def test_sinusoid_matches_float64():
    t = np.array([0, 1, 235, 500, 865, 875, 937.5, 999, 1000], np.float32)
    half = 128
    angle = t.astype(np.float64)[:, None] * 10000.0 ** (-np.arange(half) / half)
    expected = np.concatenate([np.cos(angle), np.sin(angle)], axis=-1)  # cos first, then sin
    np.testing.assert_allclose(np.asarray(timestep_sinusoid(jnp.asarray(t), 256)), expected, atol=5e-7)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    module = WanDiT(tiny.EXPERT, rngs=nnx.Rngs(3))
    module.head.proj.kernel.set_value(jax.random.normal(jax.random.key(0), module.head.proj.kernel.shape))
    checkpoint.save_params(path / "dit_high", flat_params(module))
    cfg_json = checkpoint.dit_config_to_json(tiny.EXPERT)
    checkpoint.write_manifest(
        path, {"dtype": "float32", "components": {"dit_high": {"config": cfg_json, "params": "dit_high"}}}
    )
    return path, module


def _inputs(b=1, f=3, h=8, w=6, lc=5, seed=0):
    k = jax.random.split(jax.random.key(seed), 2)
    return (
        jax.random.normal(k[0], (b, 16, f, h, w)),
        jnp.full((b,), 999),
        jax.random.normal(k[1], (b, lc, tiny.EXPERT.text_dim)),
    )


def test_load_dit_roundtrip(tiny_checkpoint):
    path, module = tiny_checkpoint
    model = wanjax.load_dit(path, expert="high")
    x, t, c = _inputs()
    # jit vs eager may fuse differently: equal to float32 rounding
    np.testing.assert_allclose(np.asarray(model(x, t, c)), np.asarray(module(x, t, c)), rtol=1e-5, atol=1e-5)


def test_compiles_once_per_shape(tiny_checkpoint):
    model = wanjax.load_dit(tiny_checkpoint[0], expert="high")
    model(*_inputs(seed=0))
    model(*_inputs(seed=1))  # new values, same shapes
    assert model.trace_count == 1
    model(*_inputs(f=5))
    assert model.trace_count == 2


def test_missing_expert_is_a_clear_error(tiny_checkpoint):
    with pytest.raises(ValueError, match="no low-noise expert"):
        wanjax.load_dit(tiny_checkpoint[0], expert="low")
    with pytest.raises(FileNotFoundError, match="not a wanjax checkpoint"):
        wanjax.load_dit(tiny_checkpoint[0] / "nowhere")


@pytest.mark.parametrize(
    "latents, t, ctx, match",
    [
        ((1, 16, 3, 8), (1,), (1, 5, 32), r"\[B, C, F, H, W\]"),
        ((1, 8, 3, 8, 6), (1,), (1, 5, 32), "channels"),
        ((1, 16, 3, 7, 6), (1,), (1, 5, 32), "height 7"),
        ((1, 16, 3, 8, 6), (2,), (1, 5, 32), "timestep"),
        ((1, 16, 3, 8, 6), (1,), (1, 5, 33), "context width 33"),
        ((1, 16, 3, 8, 6), (1,), (1, 17, 32), "exceeds text_len"),
    ],
)
def test_bad_inputs_raise_value_error(tiny_checkpoint, latents, t, ctx, match):
    model = wanjax.load_dit(tiny_checkpoint[0], expert="high")
    with pytest.raises(ValueError, match=match):
        model(jnp.zeros(latents), jnp.zeros(t, jnp.int32), jnp.zeros(ctx))


def test_key_table_agrees_with_diffusers_converter():
    """Official -> diffusers through our table equals diffusers' own single-file converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    cfg = tiny.EXPERT
    official, diffusers = dit_keymap(cfg, "official"), dit_keymap(cfg, "diffusers")
    rng = np.random.default_rng(0)
    module = WanDiT(cfg, rngs=nnx.Rngs(0))
    flat = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in flat_params(module).items()}
    official_sd = official.to_torch(flat)
    assert len(official_sd) == len(flat)
    prefixed = {f"model.diffusion_model.{k}": torch.from_numpy(v) for k, v in official_sd.items()}
    converted = convert_wan_transformer_to_diffusers(prefixed)
    ours_diffusers = diffusers.to_torch(flat)
    assert sorted(converted) == sorted(ours_diffusers)
    for k, v in converted.items():
        np.testing.assert_array_equal(v.numpy(), ours_diffusers[k])
    # and back: torch layout -> ours is the exact inverse
    back = official.to_ours(official_sd)
    for k, v in flat.items():
        np.testing.assert_array_equal(back[k], v)
