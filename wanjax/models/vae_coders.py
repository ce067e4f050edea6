"""The Wan VAE encoder and decoder, one chunk at a time (streaming contract in `vae_blocks`).

Both follow official `Encoder3d` / `Decoder3d` (wan/modules/vae2_1.py, vae2_2.py) and diffusers
`WanEncoder3d` / `WanDecoder3d`, grouped by resolution level: each level is a `DownBlock` /
`UpBlock` of residual blocks and a resampler. The Wan2.2 layout (`cfg.residual`) adds a
parameter-free shortcut around each level and keeps the channel count in the upsampler.
"""

from __future__ import annotations

import itertools

import jax
from flax import nnx

from wanjax.models.vae_blocks import (
    AttentionBlock,
    Cache,
    CausalConv3d,
    Downsample,
    L2RMSNorm,
    ResidualBlock,
    Upsample,
    Video,
    average_down,
    duplicate_up,
    part,
)


class MidBlock(nnx.Module):
    """`ResidualBlock, AttentionBlock, ResidualBlock` at the lowest resolution (`middle`)."""

    def __init__(self, dim: int, **kw):
        self.resnets = nnx.List([ResidualBlock(dim, dim, **kw) for _ in range(2)])
        self.attention = AttentionBlock(dim, **kw)

    def __call__(self, x: Video, cache: Cache) -> tuple[Video, Cache]:
        x, first = self.resnets[0](x, part(cache, 0))
        x = self.attention(x)
        x, second = self.resnets[1](x, part(cache, 1))
        return x, (first, second)


class DownBlock(nnx.Module):
    """One encoder level: `num_res_blocks` residual blocks, then an optional `Downsample`.

    Wan2.2 (`residual=True`) adds `average_down` of the level's input as a shortcut.
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, *, down: bool, temporal: bool,
        residual: bool, **kw,
    ):
        dims = [in_dim] + [out_dim] * num_res_blocks
        self.resnets = nnx.List([ResidualBlock(a, b, **kw) for a, b in itertools.pairwise(dims)])
        self.downsample = Downsample(out_dim, temporal=temporal, **kw) if down else None
        self.out_dim = out_dim
        self.shortcut_factors = ((2 if temporal else 1), (2 if down else 1)) if residual else None

    def __call__(self, x: Video, cache: Cache) -> tuple[Video, Cache]:
        h, caches = x, []
        for j, block in enumerate(self.resnets):
            h, c = block(h, part(part(cache, 0), j))
            caches.append(c)
        down_cache = None
        if self.downsample is not None:
            h, down_cache = self.downsample(h, part(cache, 1))
        if self.shortcut_factors is not None:
            h = h + average_down(x, self.out_dim, *self.shortcut_factors).astype(h.dtype)
        return h, (tuple(caches), down_cache)


class UpBlock(nnx.Module):
    """One decoder level: `num_res_blocks + 1` residual blocks, then an optional `Upsample`.

    Wan2.2 (`residual=True`) adds `duplicate_up` of the level's input as a shortcut.
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, *, up: bool, temporal: bool,
        residual: bool, **kw,
    ):
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nnx.List([ResidualBlock(a, b, **kw) for a, b in itertools.pairwise(dims)])
        # Wan2.1 halves the channels in the upsampler; Wan2.2 keeps them.
        up_dim = out_dim if residual else out_dim // 2
        self.upsample = Upsample(out_dim, up_dim, temporal=temporal, **kw) if up else None
        self.out_dim = out_dim
        self.shortcut_factors = ((2 if temporal else 1), 2) if residual and up else None

    def __call__(self, x: Video, cache: Cache) -> tuple[Video, Cache]:
        h, caches = x, []
        for j, block in enumerate(self.resnets):
            h, c = block(h, part(part(cache, 0), j))
            caches.append(c)
        up_cache = None
        if self.upsample is not None:
            h, up_cache = self.upsample(h, part(cache, 1))
        if self.shortcut_factors is not None:
            shortcut = duplicate_up(x, self.out_dim, *self.shortcut_factors, cache is None)
            h = h + shortcut.astype(h.dtype)
        return h, (tuple(caches), up_cache)


class Encoder(nnx.Module):
    """Pixels (or 2x2 pixel patches) -> `2 * z_dim` channels: latent mean and log-variance."""

    def __init__(self, cfg, **kw):
        levels = cfg.encoder_levels()
        last = len(levels) - 1
        width = levels[-1][1]
        self.conv_in = CausalConv3d(
            cfg.image_channels, levels[0][0], (3, 3, 3), padding=(1, 1, 1), **kw
        )
        self.down_blocks = nnx.List([
            DownBlock(
                in_dim, out_dim, cfg.num_res_blocks, down=i != last,
                temporal=i != last and cfg.temporal_downsample[i], residual=cfg.residual, **kw,
            )
            for i, (in_dim, out_dim) in enumerate(levels)
        ])
        self.mid = MidBlock(width, **kw)
        self.norm_out = L2RMSNorm(width, param_dtype=kw["param_dtype"], rngs=kw["rngs"])
        self.conv_out = CausalConv3d(width, 2 * cfg.z_dim, (3, 3, 3), padding=(1, 1, 1), **kw)

    def __call__(self, x: Video, cache: Cache) -> tuple[Video, Cache]:
        x, conv_in = self.conv_in(x, part(cache, 0))
        blocks = []
        for i, block in enumerate(self.down_blocks):
            x, c = block(x, part(part(cache, 1), i))
            blocks.append(c)
        x, mid = self.mid(x, part(cache, 2))
        x, conv_out = self.conv_out(jax.nn.silu(self.norm_out(x)), part(cache, 3))
        return x, (conv_in, tuple(blocks), mid, conv_out)


class Decoder(nnx.Module):
    """`z_dim` channels -> pixels (or 2x2 pixel patches): x4 in time, x8 (x16) in space."""

    def __init__(self, cfg, **kw):
        levels = cfg.decoder_levels()
        temporal_up = cfg.temporal_downsample[::-1]
        last = len(levels) - 1
        width, out_width = levels[0][0], levels[-1][1]
        self.conv_in = CausalConv3d(cfg.z_dim, width, (3, 3, 3), padding=(1, 1, 1), **kw)
        self.mid = MidBlock(width, **kw)
        self.up_blocks = nnx.List([
            UpBlock(
                in_dim, out_dim, cfg.num_res_blocks, up=i != last,
                temporal=i != last and temporal_up[i], residual=cfg.residual, **kw,
            )
            for i, (in_dim, out_dim) in enumerate(levels)
        ])
        self.norm_out = L2RMSNorm(out_width, param_dtype=kw["param_dtype"], rngs=kw["rngs"])
        self.conv_out = CausalConv3d(
            out_width, cfg.image_channels, (3, 3, 3), padding=(1, 1, 1), **kw
        )

    def __call__(self, x: Video, cache: Cache) -> tuple[Video, Cache]:
        x, conv_in = self.conv_in(x, part(cache, 0))
        x, mid = self.mid(x, part(cache, 1))
        blocks = []
        for i, block in enumerate(self.up_blocks):
            x, c = block(x, part(part(cache, 2), i))
            blocks.append(c)
        x, conv_out = self.conv_out(jax.nn.silu(self.norm_out(x)), part(cache, 3))
        return x, (conv_in, mid, tuple(blocks), conv_out)
