"""WanVAE against diffusers `AutoencoderKLWan`: random tiny configs, fp32, our key table.

diffusers `_encode` / `_decode` chunk the clip (1, 4, 4, ... frames in; one latent frame out at a
time) with a mutable feature cache; that chunked math is the reference for our `lax.scan` version.
"""

import numpy as np
import pytest
import torch

from convert.keymaps_vae import vae_config_from_diffusers, vae_keymap
from torch_refs import diffusers_vae, state_dict_numpy
from wanjax.models.vae import VAEConfig, vae_from_flat_params

TOL = 1e-4
WAN21_TINY = VAEConfig.tiny()
WAN22_TINY = VAEConfig(
    base_dim=8, decoder_base_dim=12, z_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
    latents_mean=(0.1, -0.2, 0.3, -0.4), latents_std=(1.5, 0.5, 2.0, 0.8), residual=True,
    patch_size=2,
)


def _pair(cfg: VAEConfig, seed: int = 0):
    reference = diffusers_vae(cfg, seed)
    assert vae_config_from_diffusers(reference.config) == cfg
    flat = vae_keymap(cfg, "diffusers").to_ours(state_dict_numpy(reference))
    ours = vae_from_flat_params(cfg, flat)
    return reference, ours


@pytest.fixture(scope="module")
def wan21():
    return _pair(WAN21_TINY)


@pytest.fixture(scope="module")
def wan22():
    return _pair(WAN22_TINY, seed=1)


def _video(frames: int, height: int, width: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch, 3, frames, height, width)).astype(np.float32)


def _latents(cfg: VAEConfig, frames: int, h: int, w: int, batch: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, cfg.z_dim, frames, h, w)).astype(np.float32)


def _ref_encode(reference, video: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reference.encode(torch.from_numpy(video)).latent_dist.mean.numpy()


def _ref_decode(reference, latents: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reference.decode(torch.from_numpy(latents)).sample.numpy()


def _stats(cfg: VAEConfig):
    shape = (1, cfg.z_dim, 1, 1, 1)
    mean = np.asarray(cfg.latents_mean, np.float32).reshape(shape)
    inv_std = (1.0 / np.asarray(cfg.latents_std, np.float32)).reshape(shape)
    return mean, inv_std


def _check(ours, expected):
    ours = np.asarray(ours)
    assert ours.shape == expected.shape
    err = float(np.max(np.abs(ours - expected)))
    assert err <= TOL, f"max abs error {err:.2e}"


# Batch 2 on the middle lengths; the normalised test reuses those compiled shapes.
@pytest.mark.parametrize("frames, batch", [(1, 1), (5, 2), (9, 1)])
def test_wan21_encode_matches_diffusers(wan21, frames, batch):
    reference, ours = wan21
    video = _video(frames, 16, 32, batch=batch, seed=frames)
    expected = _ref_encode(reference, video)
    assert expected.shape == (batch, 4, 1 + (frames - 1) // 4, 2, 4)
    _check(ours.encode_raw(video), expected)


@pytest.mark.parametrize("latent_frames, batch", [(1, 1), (2, 2), (3, 1)])
def test_wan21_decode_matches_diffusers(wan21, latent_frames, batch):
    reference, ours = wan21
    latents = _latents(WAN21_TINY, latent_frames, 2, 4, batch=batch, seed=latent_frames)
    expected = _ref_decode(reference, latents)
    assert expected.shape == (batch, 3, 1 + 4 * (latent_frames - 1), 16, 32)
    assert np.mean(np.abs(expected) >= 1.0) < 0.2  # the clamp does not hide the comparison
    _check(ours.decode_raw(latents), expected)


def test_wan21_normalised_forms_match_pipeline_statistics(wan21):
    """encode: (mu - mean) * (1/std); decode: z / (1/std) + mean, as the official VAE wrapper and
    the diffusers pipelines compute them."""
    reference, ours = wan21
    mean, inv_std = _stats(WAN21_TINY)
    video = _video(5, 16, 32, batch=2, seed=7)
    _check(ours.encode(video), (_ref_encode(reference, video) - mean) * inv_std)
    latents = _latents(WAN21_TINY, 2, 2, 4, batch=2, seed=8)
    _check(ours.decode(latents), _ref_decode(reference, latents / inv_std + mean))


# Wan2.2 (TI2V-5B layout: 2x2 patches, level shortcuts). 5 frames / 2 latent frames cover the first
# chunk and one scan step; the longer clips are in the slow suite.
@pytest.mark.parametrize("frames", [5, pytest.param(9, marks=pytest.mark.slow)])
def test_wan22_encode_matches_diffusers(wan22, frames):
    reference, ours = wan22
    video = _video(frames, 32, 64, seed=frames)
    _check(ours.encode_raw(video), _ref_encode(reference, video))


@pytest.mark.parametrize("latent_frames", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_wan22_decode_matches_diffusers(wan22, latent_frames):
    reference, ours = wan22
    latents = _latents(WAN22_TINY, latent_frames, 2, 4, seed=latent_frames)
    expected = _ref_decode(reference, latents)
    assert expected.shape == (1, 3, 1 + 4 * (latent_frames - 1), 32, 64)
    _check(ours.decode_raw(latents), expected)
