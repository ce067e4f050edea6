"""The Wan VAE key table (spec section 5.1 "diffusers VAE keys") and config recovery.

Official `Wan2.1_VAE.pth` / `Wan2.2_VAE.pth` and diffusers `AutoencoderKLWan` checkpoints map onto
`wanjax.models.vae.WanVAE` through the shared `Rule` / `KeyMap` machinery. The official files carry
no config, so `infer_vae_config` reads the architecture off the tensor shapes; diffusers ships a
`config.json`, read by `vae_config_from_diffusers`.

Layouts by VAE version (i = level, j = block in level, k = flat index):
- Wan2.1 official: `encoder.downsamples.{k}`, `decoder.upsamples.{k}` (flat: blocks and resamplers);
  diffusers: `encoder.down_blocks.{k}` (flat), `decoder.up_blocks.{i}.resnets.{j}` /
  `.upsamplers.0`.
- Wan2.2 official: `encoder.downsamples.{i}.downsamples.{j}`, `decoder.upsamples.{i}.upsamples.{j}`
  (the resampler is the last j); diffusers: `{en,de}coder.{down,up}_blocks.{i}.resnets.{j}` and
  `.downsampler` / `.upsampler`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flax import nnx

from convert.keymaps import KeyMap, KeyMapError, Rule
from wanjax.models.vae import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    VAEConfig,
    WanVAE,
)

_VOLUME, _IMAGE = (1, 1, 1), (1, 1)  # trailing ones of gamma: 3-D norms, per-frame attention norm
_KNOWN_STATS = {  # z_dim -> (mean, std): Wan2.1 and Wan2.2
    16: (WAN21_LATENTS_MEAN, WAN21_LATENTS_STD),
    48: (WAN22_LATENTS_MEAN, WAN22_LATENTS_STD),
}


def _resnet(ours: str, official: str, diffusers: str, shortcut: bool) -> list[Rule]:
    rules = [
        Rule(f"{ours}.norm1", f"{official}.residual.0", f"{diffusers}.norm1", "gamma", _VOLUME),
        Rule(f"{ours}.conv1", f"{official}.residual.2", f"{diffusers}.conv1", "conv"),
        Rule(f"{ours}.norm2", f"{official}.residual.3", f"{diffusers}.norm2", "gamma", _VOLUME),
        Rule(f"{ours}.conv2", f"{official}.residual.6", f"{diffusers}.conv2", "conv"),
    ]
    if shortcut:
        o, d = f"{official}.shortcut", f"{diffusers}.conv_shortcut"
        rules.append(Rule(f"{ours}.shortcut", o, d, "conv"))
    return rules


def _resample(ours: str, official: str, diffusers: str, temporal: bool) -> list[Rule]:
    rules = [Rule(f"{ours}.conv", f"{official}.resample.1", f"{diffusers}.resample.1", "conv")]
    if temporal:
        o, d = f"{official}.time_conv", f"{diffusers}.time_conv"
        rules.append(Rule(f"{ours}.time_conv", o, d, "conv"))
    return rules


def _mid(side: str) -> list[Rule]:
    ours, o, d = f"{side}.mid", f"{side}.middle", f"{side}.mid_block"
    attn, o_attn, d_attn = f"{ours}.attention", f"{o}.1", f"{d}.attentions.0"
    return [
        *_resnet(f"{ours}.resnets.0", f"{o}.0", f"{d}.resnets.0", False),
        Rule(f"{attn}.norm", f"{o_attn}.norm", f"{d_attn}.norm", "gamma", _IMAGE),
        Rule(f"{attn}.to_qkv", f"{o_attn}.to_qkv", f"{d_attn}.to_qkv", "conv"),
        Rule(f"{attn}.proj", f"{o_attn}.proj", f"{d_attn}.proj", "conv"),
        *_resnet(f"{ours}.resnets.1", f"{o}.2", f"{d}.resnets.1", False),
    ]


def _encoder_levels(cfg: VAEConfig) -> list[Rule]:
    rules, flat = [], 0
    levels = cfg.encoder_levels()
    for i, (in_dim, out_dim) in enumerate(levels):
        down = i != len(levels) - 1
        temporal = down and cfg.temporal_downsample[i]
        ours = f"encoder.down_blocks.{i}"
        for j in range(cfg.num_res_blocks + down):
            resnet = j < cfg.num_res_blocks
            if cfg.residual:
                official = f"encoder.downsamples.{i}.downsamples.{j}"
                diffusers = f"{ours}.resnets.{j}" if resnet else f"{ours}.downsampler"
            else:
                official, diffusers = f"encoder.downsamples.{flat}", f"encoder.down_blocks.{flat}"
            flat += 1
            if resnet:
                shortcut = j == 0 and in_dim != out_dim
                rules += _resnet(f"{ours}.resnets.{j}", official, diffusers, shortcut)
            else:
                rules += _resample(f"{ours}.downsample", official, diffusers, temporal)
    return rules


def _decoder_levels(cfg: VAEConfig) -> list[Rule]:
    rules, flat = [], 0
    levels = cfg.decoder_levels()
    temporal_up = cfg.temporal_downsample[::-1]
    for i, (in_dim, out_dim) in enumerate(levels):
        up = i != len(levels) - 1
        blocks = cfg.num_res_blocks + 1
        ours = f"decoder.up_blocks.{i}"  # diffusers names the residual blocks the same way
        resampler = f"{ours}.upsampler" if cfg.residual else f"{ours}.upsamplers.0"
        for j in range(blocks + up):
            if cfg.residual:
                official = f"decoder.upsamples.{i}.upsamples.{j}"
            else:
                official = f"decoder.upsamples.{flat}"
            flat += 1
            if j < blocks:
                shortcut = j == 0 and in_dim != out_dim
                rules += _resnet(f"{ours}.resnets.{j}", official, f"{ours}.resnets.{j}", shortcut)
            else:
                rules += _resample(f"{ours}.upsample", official, resampler, up and temporal_up[i])
    return rules


def vae_rules(cfg: VAEConfig) -> list[Rule]:
    """The whole VAE table: official `WanVAE_` <-> diffusers `AutoencoderKLWan` <-> `WanVAE`."""
    rules = [
        Rule("encoder.conv_in", "encoder.conv1", "encoder.conv_in", "conv"),
        *_encoder_levels(cfg),
        *_mid("encoder"),
        Rule("encoder.norm_out", "encoder.head.0", "encoder.norm_out", "gamma", _VOLUME),
        Rule("encoder.conv_out", "encoder.head.2", "encoder.conv_out", "conv"),
        Rule("quant_conv", "conv1", "quant_conv", "conv"),
        Rule("post_quant_conv", "conv2", "post_quant_conv", "conv"),
        Rule("decoder.conv_in", "decoder.conv1", "decoder.conv_in", "conv"),
        *_mid("decoder"),
        *_decoder_levels(cfg),
        Rule("decoder.norm_out", "decoder.head.0", "decoder.norm_out", "gamma", _VOLUME),
        Rule("decoder.conv_out", "decoder.head.2", "decoder.conv_out", "conv"),
    ]
    return rules


def vae_keymap(cfg: VAEConfig, layout: str) -> KeyMap:
    """The VAE `KeyMap` for `cfg` in `layout` ('official' | 'diffusers')."""
    return KeyMap(vae_rules(cfg), layout)


def detect_vae_layout(keys) -> str:
    """'official' or 'diffusers', from the name of the encoder's first convolution."""
    keys = set(keys)
    if "encoder.conv1.weight" in keys:
        return "official"
    if "encoder.conv_in.weight" in keys:
        return "diffusers"
    raise KeyMapError(
        "not a Wan VAE checkpoint: neither 'encoder.conv1.weight' (official) nor "
        f"'encoder.conv_in.weight' (diffusers) is present; {len(keys)} keys, "
        f"e.g. {sorted(keys)[:4]}"
    )


def vae_config_from_diffusers(config: Mapping[str, Any]) -> VAEConfig:
    """`VAEConfig` from a diffusers `AutoencoderKLWan` `config.json` (missing keys: defaults)."""
    if config.get("attn_scales"):
        raise ValueError(f"attn_scales {config['attn_scales']} is not supported (Wan VAEs use [])")
    patch = config.get("patch_size") or 1
    for key in ("in_channels", "out_channels"):
        if config.get(key, 3 * patch * patch) != 3 * patch * patch:
            raise ValueError(
                f"{key}={config[key]} does not match patch_size {patch} "
                f"(expected {3 * patch * patch})"
            )
    defaults = VAEConfig()
    temporal = defaults.temporal_downsample  # diffusers spells the key `temperal_downsample`
    return VAEConfig(
        base_dim=config.get("base_dim", defaults.base_dim),
        decoder_base_dim=config.get("decoder_base_dim"),
        z_dim=config.get("z_dim", defaults.z_dim),
        dim_mult=tuple(config.get("dim_mult", defaults.dim_mult)),
        num_res_blocks=config.get("num_res_blocks", defaults.num_res_blocks),
        temporal_downsample=tuple(map(bool, config.get("temperal_downsample", temporal))),
        latents_mean=tuple(config.get("latents_mean", defaults.latents_mean)),
        latents_std=tuple(config.get("latents_std", defaults.latents_std)),
        residual=bool(config.get("is_residual", False)),
        patch_size=patch,
    )


def vae_config_to_diffusers(cfg: VAEConfig) -> dict[str, Any]:
    """The `config.json` diffusers' `AutoencoderKLWan.from_pretrained` reads (for export)."""
    return {
        "_class_name": "AutoencoderKLWan",
        "base_dim": cfg.base_dim,
        "decoder_base_dim": cfg.decoder_base_dim,
        "z_dim": cfg.z_dim,
        "dim_mult": list(cfg.dim_mult),
        "num_res_blocks": cfg.num_res_blocks,
        "attn_scales": [],
        "temperal_downsample": list(cfg.temporal_downsample),
        "dropout": 0.0,
        "latents_mean": list(cfg.latents_mean),
        "latents_std": list(cfg.latents_std),
        "is_residual": cfg.residual,
        "in_channels": cfg.image_channels,
        "out_channels": cfg.image_channels,
        "patch_size": cfg.patch_size if cfg.patch_size > 1 else None,
        "scale_factor_temporal": 4,
        "scale_factor_spatial": cfg.spatial_factor,
    }


def read_vae_config(
    location: Path, shapes: Mapping[str, tuple[int, ...]], layout: str
) -> VAEConfig:
    """The config of the VAE at `location`: a diffusers folder's `config.json` when there is one,
    else (official `.pth`, single files) read off the tensor `shapes`."""
    config_path = location / "config.json" if location.is_dir() else None
    if layout == "diffusers" and config_path is not None and config_path.is_file():
        return vae_config_from_diffusers(json.loads(config_path.read_text()))
    return infer_vae_config(shapes)


def _encoder_blocks(
    shapes: Mapping[str, tuple[int, ...]], official: bool, residual: bool
) -> list[list[str]]:
    """Key prefixes of the encoder's residual blocks and resamplers, grouped by level."""

    def exists(prefix: str) -> bool:
        return any(k.startswith(prefix + ".") for k in shapes)

    def run(prefix: str) -> list[str]:
        blocks = []
        while exists(f"{prefix}.{len(blocks)}"):
            blocks.append(f"{prefix}.{len(blocks)}")
        return blocks

    top = "encoder.downsamples" if official else "encoder.down_blocks"
    if residual:
        levels = []
        while exists(f"{top}.{len(levels)}"):
            i = len(levels)
            if official:
                levels.append(run(f"{top}.{i}.downsamples"))
            else:
                down = [f"{top}.{i}.downsampler"] if exists(f"{top}.{i}.downsampler") else []
                levels.append(run(f"{top}.{i}.resnets") + down)
        return levels
    levels, level = [], []
    for block in run(top):  # Wan2.1: one flat list; a resampler closes a level
        level.append(block)
        if f"{block}.resample.1.weight" in shapes:
            levels.append(level)
            level = []
    return levels + [level]


def infer_vae_config(
    shapes: Mapping[str, tuple[int, ...]],
    latents_mean: tuple[float, ...] | None = None,
    latents_std: tuple[float, ...] | None = None,
) -> VAEConfig:
    """Recovers the architecture from tensor shapes (official `.pth` files carry no config).

    `shapes` maps checkpoint keys (either layout) to shapes. Latent statistics are not in the
    weights: the Wan2.1 (z_dim 16) and Wan2.2 (z_dim 48) values are used unless given.
    """
    shapes = {k: tuple(v) for k, v in shapes.items()}
    layout = detect_vae_layout(shapes)
    official = layout == "official"
    conv_in = shapes["encoder.conv1.weight" if official else "encoder.conv_in.weight"]
    post_quant = shapes.get("conv2.weight" if official else "post_quant_conv.weight")
    dec_in = shapes.get("decoder.conv1.weight" if official else "decoder.conv_in.weight")
    if post_quant is None or dec_in is None:
        raise KeyMapError(f"{layout} VAE checkpoint lacks its post-quant or decoder input conv")
    base_dim, image_channels = conv_in[0], conv_in[1]
    patch = math.isqrt(image_channels // 3)
    if 3 * patch * patch != image_channels:
        raise KeyMapError(f"encoder input conv takes {image_channels} channels; expected 3 or 12")
    # Wan2.2 groups the encoder blocks by level.
    nested = "encoder.downsamples.0.downsamples." if official else "encoder.down_blocks.0.resnets."
    residual = any(k.startswith(nested) for k in shapes)
    conv1 = "residual.2.weight" if official else "conv1.weight"
    levels = []  # (output widths of the residual blocks, temporal flag of the resampler or None)
    for blocks in _encoder_blocks(shapes, official, residual):
        widths = [shapes[f"{b}.{conv1}"][0] for b in blocks if f"{b}.{conv1}" in shapes]
        resamplers = [b for b in blocks if f"{b}.resample.1.weight" in shapes]
        temporal = f"{resamplers[-1]}.time_conv.weight" in shapes if resamplers else None
        levels.append((widths, temporal))
    counts = {len(w) for w, _ in levels}
    if (
        len(counts) != 1 or 0 in counts or len(levels) < 2
        or any(t is None for _, t in levels[:-1]) or levels[-1][1] is not None
    ):
        raise KeyMapError(f"cannot read the encoder levels from the {layout} keys: {levels}")
    for widths, _ in levels:
        if len(set(widths)) != 1 or widths[0] % base_dim:
            raise KeyMapError(
                f"encoder level widths {widths} are not one multiple of base_dim {base_dim}"
            )
    dim_mult = tuple(w[0] // base_dim for w, _ in levels)
    z_dim = post_quant[0]
    if latents_mean is None or latents_std is None:
        if z_dim not in _KNOWN_STATS:
            raise ValueError(
                f"no latent statistics are known for z_dim={z_dim}; "
                "pass latents_mean and latents_std"
            )
        latents_mean, latents_std = _KNOWN_STATS[z_dim]
    decoder_base_dim = dec_in[0] // dim_mult[-1]
    return VAEConfig(
        base_dim=base_dim,
        decoder_base_dim=None if decoder_base_dim == base_dim else decoder_base_dim,
        z_dim=z_dim,
        dim_mult=dim_mult,
        num_res_blocks=counts.pop(),
        temporal_downsample=tuple(bool(t) for _, t in levels[:-1]),
        latents_mean=tuple(latents_mean),
        latents_std=tuple(latents_std),
        residual=residual,
        patch_size=patch,
    )


def vae_state_dict_to_ours(state_dict: Mapping[str, Any], cfg: VAEConfig | None = None):
    """`(cfg, layout, flat params)` from a whole VAE state dict of either layout.

    `cfg` defaults to `infer_vae_config` of the shapes. Raises `KeyMapError` on missing or unknown
    keys and ValueError on shapes that do not fit `cfg`.
    """
    layout = detect_vae_layout(state_dict)
    if cfg is None:
        cfg = infer_vae_config({k: tuple(v.shape) for k, v in state_dict.items()})
    keymap = vae_keymap(cfg, layout)
    flat = keymap.to_ours({k: _numpy(v) for k, v in state_dict.items()})
    check_vae_shapes(cfg, flat, keymap)
    return cfg, layout, flat


def vae_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Our parameter shapes (dotted path -> shape), from `nnx.eval_shape` (no allocation)."""
    abstract = nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    return {".".join(map(str, p)): tuple(v.shape) for p, v in flat}


def check_vae_shapes(cfg: VAEConfig, flat: Mapping[str, Any], keymap: KeyMap | None = None) -> None:
    """Raises ValueError naming the parameters whose shapes do not fit `cfg` (and, given the
    `keymap`, the checkpoint keys they came from)."""
    bad = []
    for key, shape in vae_shapes(cfg).items():
        if key in flat and tuple(flat[key].shape) != shape:
            source = f" (checkpoint {keymap.by_ours[key].torch_key})" if keymap else ""
            bad.append(f"{key}{source}: {tuple(flat[key].shape)} != {shape}")
    if bad:
        raise ValueError(f"{len(bad)} VAE tensors do not fit the config: " + "; ".join(bad[:6]))


def _numpy(value):
    """Torch tensors (any float dtype) and arrays to numpy, without importing torch here."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return value
