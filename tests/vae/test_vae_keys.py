"""The VAE key table and config recovery, checked against diffusers' own converter and models."""

import inspect
import json

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from convert.keymaps import KeyMapError
from convert.keymaps_vae import (
    detect_vae_layout,
    infer_vae_config,
    read_vae_config,
    vae_config_from_diffusers,
    vae_config_to_diffusers,
    vae_keymap,
    vae_state_dict_to_ours,
)
from torch_refs import diffusers_vae
from wanjax.models.vae import VAEConfig, WanVAE

STATS4 = dict(latents_mean=(0.1, -0.2, 0.3, -0.4), latents_std=(1.5, 0.5, 2.0, 0.8))
# Wan2.1 layout with the real level structure (the diffusers converter hard-codes its indices).
WAN21_SMALL = VAEConfig(base_dim=4, z_dim=4, dim_mult=(1, 2, 4, 4), num_res_blocks=2, **STATS4)
WAN22_SMALL = VAEConfig(
    base_dim=4, decoder_base_dim=6, z_dim=4, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
    residual=True, patch_size=2, **STATS4,
)


def _random_flat(cfg: VAEConfig, seed: int = 0) -> dict[str, np.ndarray]:
    abstract = nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    return {
        ".".join(map(str, path)): rng.standard_normal(v.shape).astype(np.float32)
        for path, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    }


def _param_count(cfg: VAEConfig) -> int:
    abstract = nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def test_preset_parameter_counts():
    assert _param_count(VAEConfig.wan21()) == 126_892_531  # spec 3.1: Wan2.1_VAE.pth
    assert _param_count(VAEConfig.wan22()) == 704_688_668  # spec 3.1: Wan2.2_VAE.pth


def test_wan21_preset_equals_diffusers_defaults():
    """The preset (latent statistics included) is diffusers' `AutoencoderKLWan()` default."""
    from diffusers import AutoencoderKLWan

    defaults = {
        k: p.default for k, p in inspect.signature(AutoencoderKLWan.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert vae_config_from_diffusers(defaults) == VAEConfig.wan21()
    assert vae_config_from_diffusers({}) == VAEConfig.wan21()


def test_wan22_preset_from_diffusers_config():
    """diffusers' Wan2.2 VAE config (`vae22_diffusers_config` in its convert_wan_to_diffusers)."""
    cfg = VAEConfig.wan22()
    config = {
        "base_dim": 160, "z_dim": 48, "is_residual": True, "in_channels": 12, "out_channels": 12,
        "decoder_base_dim": 256, "scale_factor_temporal": 4, "scale_factor_spatial": 16,
        "patch_size": 2, "clip_output": False,
        "latents_mean": list(cfg.latents_mean), "latents_std": list(cfg.latents_std),
    }
    assert vae_config_from_diffusers(config) == cfg
    assert cfg.spatial_factor == 16


@pytest.mark.parametrize("cfg", [VAEConfig.wan21(), VAEConfig.wan22(), VAEConfig.tiny()])
def test_diffusers_config_export_roundtrip(cfg, tmp_path):
    from diffusers import AutoencoderKLWan

    config = vae_config_to_diffusers(cfg)
    assert vae_config_from_diffusers(config) == cfg
    accepted = set(inspect.signature(AutoencoderKLWan.__init__).parameters)
    assert set(config) - {"_class_name"} <= accepted
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert read_vae_config(tmp_path, {}, "diffusers") == cfg


def test_key_table_agrees_with_diffusers_converter():
    """Official -> diffusers through our table equals diffusers' `convert_wan_vae_to_diffusers`."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    cfg = WAN21_SMALL
    official, diffusers = vae_keymap(cfg, "official"), vae_keymap(cfg, "diffusers")
    flat = _random_flat(cfg)
    official_sd = official.to_torch(flat)
    assert len(official_sd) == len(flat)
    as_torch = {k: torch.from_numpy(v) for k, v in official_sd.items()}
    converted = convert_wan_vae_to_diffusers(as_torch)
    ours_diffusers = diffusers.to_torch(flat)
    assert sorted(converted) == sorted(ours_diffusers)
    for k, v in converted.items():
        np.testing.assert_array_equal(v.numpy(), ours_diffusers[k])
    # The torch shapes (gamma (C,1,1,1) / (C,1,1), conv [O, I, k...]) are what diffusers builds.
    diffusers_vae(cfg).load_state_dict({k: torch.from_numpy(v) for k, v in ours_diffusers.items()})
    back = official.to_ours(official_sd)
    for k, v in flat.items():
        np.testing.assert_array_equal(back[k], v)


def test_wan22_diffusers_names_and_shapes_load_strictly():
    cfg = WAN22_SMALL
    flat = _random_flat(cfg, seed=1)
    sd = vae_keymap(cfg, "diffusers").to_torch(flat)
    reference = diffusers_vae(cfg)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    for k, v in reference.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k])


def test_wan22_official_names_follow_vae2_2():
    """vae2_2.py nests `Down_ResidualBlock.downsamples` / `Up_ResidualBlock.upsamples`, resampler
    last."""
    cfg = WAN22_SMALL
    flat = _random_flat(cfg, seed=2)
    sd = vae_keymap(cfg, "official").to_torch(flat)
    expected = {
        "encoder.conv1.weight": (4, 12, 3, 3, 3),
        "encoder.downsamples.0.downsamples.0.residual.0.gamma": (4, 1, 1, 1),
        "encoder.downsamples.0.downsamples.2.resample.1.weight": (4, 4, 3, 3),
        "encoder.downsamples.1.downsamples.0.shortcut.weight": (8, 4, 1, 1, 1),
        "encoder.downsamples.1.downsamples.2.time_conv.weight": (8, 8, 3, 1, 1),
        "encoder.middle.1.norm.gamma": (16, 1, 1),
        "decoder.upsamples.0.upsamples.3.time_conv.weight": (48, 24, 3, 1, 1),
        "decoder.upsamples.0.upsamples.3.resample.1.weight": (24, 24, 3, 3),
        "decoder.upsamples.3.upsamples.0.shortcut.weight": (6, 12, 1, 1, 1),
        "decoder.head.2.weight": (12, 6, 3, 3, 3),
    }
    for k, shape in expected.items():
        assert sd[k].shape == shape, k
    assert "encoder.downsamples.0.downsamples.2.time_conv.weight" not in sd  # spatial only
    assert not any(k.startswith("decoder.upsamples.3.upsamples.3.") for k in sd)  # no upsampler
    back = vae_keymap(cfg, "official").to_ours(sd)
    for k, v in flat.items():
        np.testing.assert_array_equal(back[k], v)


@pytest.mark.parametrize(
    "cfg", [WAN21_SMALL, VAEConfig.tiny(), WAN22_SMALL], ids=["wan21", "tiny", "wan22"]
)
@pytest.mark.parametrize("layout", ["official", "diffusers"])
def test_config_is_recovered_from_shapes(cfg, layout):
    sd = vae_keymap(cfg, layout).to_torch(_random_flat(cfg))
    assert detect_vae_layout(sd) == layout
    shapes = {k: v.shape for k, v in sd.items()}
    assert infer_vae_config(shapes, cfg.latents_mean, cfg.latents_std) == cfg


def test_official_pth_through_torch_load(tmp_path):
    """An official-layout `.pth` (torch pickle) converts to exactly our parameters."""
    cfg = WAN21_SMALL
    flat = _random_flat(cfg, seed=3)
    path = tmp_path / "Wan2.1_VAE.pth"
    sd = vae_keymap(cfg, "official").to_torch(flat)
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    got_cfg, layout, got = vae_state_dict_to_ours(loaded, cfg)
    assert (got_cfg, layout) == (cfg, "official")
    for k, v in flat.items():
        np.testing.assert_array_equal(got[k], v)


def test_known_latent_statistics_are_filled_in_for_z16():
    sd = vae_keymap(WAN21_SMALL, "official").to_torch(_random_flat(WAN21_SMALL))
    shapes = {k: v.shape for k, v in sd.items()}
    with pytest.raises(ValueError, match="no latent statistics are known for z_dim=4"):
        infer_vae_config(shapes)
    shapes["conv2.weight"] = (16, 16, 1, 1, 1)  # as if z_dim were 16: Wan2.1 statistics apply
    assert infer_vae_config(shapes).latents_mean == VAEConfig.wan21().latents_mean


@pytest.fixture(scope="module")
def official_sd():
    return vae_keymap(WAN21_SMALL, "official").to_torch(_random_flat(WAN21_SMALL))


def test_missing_and_unknown_keys_are_named(official_sd):
    sd = dict(official_sd)
    del sd["decoder.upsamples.3.time_conv.weight"]
    sd["decoder.extra.weight"] = np.zeros(3, np.float32)
    match = r"missing 1 keys: decoder\.upsamples\.3\.time_conv\.weight.*unknown 1 keys: decoder"
    with pytest.raises(KeyMapError, match=match):
        vae_state_dict_to_ours(sd, WAN21_SMALL)


def test_bad_gamma_shape_is_a_clear_error(official_sd):
    sd = dict(official_sd, **{"encoder.head.0.gamma": np.ones((16, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"gamma of shape \(16, 1, 1\) is not \(C, 1, 1, 1\)"):
        vae_state_dict_to_ours(sd, WAN21_SMALL)


def test_wrong_tensor_shape_is_named(official_sd):
    sd = dict(official_sd, **{"decoder.conv1.weight": np.zeros((16, 4, 3, 3, 1), np.float32)})
    match = r"decoder\.conv_in\.kernel \(checkpoint decoder\.conv1\.weight\)"
    with pytest.raises(ValueError, match=match):
        vae_state_dict_to_ours(sd, WAN21_SMALL)


def test_not_a_vae_checkpoint():
    with pytest.raises(KeyMapError, match="not a Wan VAE checkpoint"):
        vae_state_dict_to_ours({"blocks.0.self_attn.q.weight": np.zeros((2, 2), np.float32)})


@pytest.mark.parametrize(
    "config, match",
    [
        ({"attn_scales": [0.5]}, "attn_scales"),
        ({"in_channels": 12}, "in_channels=12 does not match patch_size 1"),
        ({"z_dim": 4}, "latents_mean/latents_std have 16/16 entries; z_dim is 4"),
        ({"temperal_downsample": [False, False, True]}, "exactly twice"),
    ],
)
def test_bad_diffusers_config(config, match):
    with pytest.raises(ValueError, match=match):
        vae_config_from_diffusers(config)
