"""Input checks, config validation and the decode memory contract of WanVAE."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wanjax.models.vae import VAEConfig, WanVAE


@pytest.fixture(scope="module")
def vae():
    # Checks run before any compute, so an abstract (unallocated) model is enough.
    return nnx.eval_shape(lambda: WanVAE(VAEConfig.tiny(), rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("frames", [0, 2, 3, 4, 6, 8, 10])
def test_encode_rejects_frame_counts_other_than_1_plus_4k(vae, frames):
    with pytest.raises(ValueError, match=f"video has {frames} frames .* 1 \\+ 4k frames"):
        vae.encode(np.zeros((1, 3, frames, 16, 16), np.float32))
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode_raw(np.zeros((1, 3, frames, 16, 16), np.float32))


@pytest.mark.parametrize(
    "shape, match",
    [
        ((3, 5, 16, 16), r"\[B, 3, T, H, W\]"),
        ((1, 4, 5, 16, 16), r"\[B, 3, T, H, W\]; got shape \(1, 4, 5, 16, 16\)"),
        ((1, 3, 5, 12, 16), "positive multiples of 8"),
        ((1, 3, 5, 16, 0), "positive multiples of 8"),
    ],
)
def test_encode_rejects_bad_video_shapes(vae, shape, match):
    with pytest.raises(ValueError, match=match):
        vae.encode(np.zeros(shape, np.float32))


@pytest.mark.parametrize(
    "shape, match",
    [
        ((4, 2, 2, 2), r"latents must be \[B, 4, T, h, w\]"),
        ((1, 16, 2, 2, 2), "latents have 16 channels .* z_dim is 4"),
        ((1, 4, 0, 2, 2), "at least one frame"),
    ],
)
def test_decode_rejects_bad_latent_shapes(vae, shape, match):
    for decode in (vae.decode, vae.decode_raw):
        with pytest.raises(ValueError, match=match):
            decode(np.zeros(shape, np.float32))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(temporal_downsample=(False, True)), "needs 3 entries"),
        (dict(temporal_downsample=(False, False, True)), "exactly twice"),
        (dict(latents_std=(1.0, 1.0, 1.0)), "3/3 entries; z_dim is 4"),
        (dict(latents_std=(1.0, 0.0, 1.0, 1.0)), "must be positive"),
        (dict(patch_size=4), "patch_size must be 1 or 2"),
    ],
)
def test_config_validation(change, match):
    cfg = VAEConfig.tiny()
    if "latents_std" in change:  # keep the mean consistent so only the std is wrong
        change = dict(change, latents_mean=cfg.latents_mean[: len(change["latents_std"])])
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(cfg, **change)


def test_config_json_roundtrip():
    for cfg in (VAEConfig.wan21(), VAEConfig.wan22(), VAEConfig.tiny()):
        assert VAEConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown VAEConfig fields"):
        VAEConfig.from_json({"base_dim": 8, "frames": 3})


def _decode_memory(cfg: VAEConfig, latent_frames: int, h: int, w: int):
    abstract = nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    z = jax.ShapeDtypeStruct((1, cfg.z_dim, latent_frames, h, w), jnp.float32)
    decode = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode_stream(z))
    return decode.lower(state, z).compile().memory_analysis()


@pytest.mark.slow  # two compilations; bench/vae_decode.py reports the same at larger sizes
def test_decode_temp_memory_does_not_grow_with_frames():
    """Activations for one latent frame at a time: XLA's temp buffers are the same for 3 and 11
    latent frames (up to the latent-sized input copy), while the output grows."""
    cfg = VAEConfig.tiny()
    short, long = _decode_memory(cfg, 3, 4, 4), _decode_memory(cfg, 11, 4, 4)
    assert long.output_size_in_bytes == short.output_size_in_bytes * 41 // 9
    latent_bytes = 4 * cfg.z_dim * 4 * 4 * (11 - 3)
    assert long.temp_size_in_bytes - short.temp_size_in_bytes <= 2 * latent_bytes
