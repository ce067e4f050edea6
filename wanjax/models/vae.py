"""The Wan video VAE in Flax NNX: Wan2.1 (used by A14B) and Wan2.2 (used by TI2V-5B).

API layout is PyTorch's `[B, C, T, H, W]`; inside everything is channels-last `[B, T, H, W, C]`.
Video is in [-1, 1] with `T = 1 + 4k` frames; latents have `1 + k` frames.

Chunking defines the math (spec section 5.1), and we reproduce it with explicit state:
- encode: frame 0 alone (the first chunk), then `lax.scan` over chunks of 4 frames;
- decode: latent frame 0 alone (the first chunk, which yields one frame), then `lax.scan` over the
  remaining latent frames (4 frames each), writing into a preallocated output, so activations for
  only one latent frame are alive at a time.
The per-convolution caches are the scan carry; see `vae_blocks` for the first-chunk special cases.

Two forms of each direction:
- `encode_raw` / `decode_raw`: no latent statistics. These are diffusers `AutoencoderKLWan`
  (`encode(x).latent_dist.mean`, `decode(z).sample`); the diffusers pipelines apply the
  statistics themselves.
- `encode` / `decode`: `(mu - mean) / std` and its inverse, as official `Wan2_1_VAE` /
  `Wan2_2_VAE` do inside. Decoded video is clamped to [-1, 1] in both forms.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from wanjax.config import Precision
from wanjax.io.params import load_flat_params
from wanjax.models.vae_blocks import CausalConv3d
from wanjax.models.vae_coders import Decoder, Encoder

# Wan2_1_VAE.__init__ and diffusers AutoencoderKLWan defaults (spec section 5.1).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
# Wan2_2_VAE.__init__ (wan/modules/vae2_2.py).
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)

FRAMES_PER_CHUNK = 4  # video frames per latent frame after the first
_FP32 = Precision()


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture and latent statistics of a Wan VAE (official `WanVAE_`, diffusers
    `AutoencoderKLWan`). `residual=True` with `patch_size=2` is the Wan2.2 layout."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    decoder_base_dim: int | None = None  # None: same as base_dim
    residual: bool = False
    patch_size: int = 1

    def __post_init__(self):
        levels = len(self.dim_mult)
        if len(self.temporal_downsample) != levels - 1:
            raise ValueError(
                f"temporal_downsample {self.temporal_downsample} needs {levels - 1} entries for "
                f"dim_mult {self.dim_mult}"
            )
        if sum(map(bool, self.temporal_downsample)) != 2:
            raise ValueError(
                f"temporal_downsample {self.temporal_downsample} must downsample time exactly "
                "twice: the 1 + 4k frame chunking assumes x4 in time"
            )
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(
                f"latents_mean/latents_std have {len(self.latents_mean)}/{len(self.latents_std)} "
                f"entries; z_dim is {self.z_dim}"
            )
        if min(self.latents_std) <= 0:
            raise ValueError(f"latents_std must be positive, got {self.latents_std}")
        if self.patch_size not in (1, 2):
            raise ValueError(f"patch_size must be 1 or 2, got {self.patch_size}")

    @property
    def decoder_dim(self) -> int:
        return self.base_dim if self.decoder_base_dim is None else self.decoder_base_dim

    @property
    def image_channels(self) -> int:
        """Channels the encoder takes and the decoder gives: RGB, folded into 2x2 patches or not."""
        return 3 * self.patch_size**2

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1) * self.patch_size

    def encoder_levels(self) -> list[tuple[int, int]]:
        """`(in_dim, out_dim)` of each encoder level."""
        dims = [self.base_dim * m for m in (1, *self.dim_mult)]
        return list(itertools.pairwise(dims))

    def decoder_levels(self) -> list[tuple[int, int]]:
        """`(in_dim, out_dim)` of each decoder level, after `decoder.conv_in` and the mid block.

        Wan2.1 upsamplers halve the channels, so every level after the first takes half of the
        previous level's width; Wan2.2 upsamplers keep them.
        """
        mult = self.dim_mult
        dims = [self.decoder_dim * m for m in (mult[-1], *mult[::-1])]
        halve = not self.residual
        pairs = enumerate(itertools.pairwise(dims))
        return [(d // 2 if i > 0 and halve else d, e) for i, (d, e) in pairs]

    @classmethod
    def wan21(cls) -> VAEConfig:
        """`Wan2.1_VAE.pth`: 126.9M params, x4 time, x8 space, 16 latent channels."""
        return cls()

    @classmethod
    def wan22(cls) -> VAEConfig:
        """`Wan2.2_VAE.pth` (TI2V-5B): 704.7M params, x4 time, x16 space, 48 latent channels."""
        return cls(
            base_dim=160, decoder_base_dim=256, z_dim=48, latents_mean=WAN22_LATENTS_MEAN,
            latents_std=WAN22_LATENTS_STD, residual=True, patch_size=2,
        )

    @classmethod
    def tiny(cls) -> VAEConfig:
        """A 0.2M-parameter Wan2.1-layout VAE (z_dim 4) for tests and CPU demos."""
        return cls(
            base_dim=8, z_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
            latents_mean=(0.1, -0.2, 0.3, -0.4), latents_std=(1.5, 0.5, 2.0, 0.8),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VAEConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown VAEConfig fields {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def check_video(cfg: VAEConfig, video) -> None:
    """Raises ValueError naming the shape when `video` cannot be encoded."""
    shape = tuple(np.shape(video))
    if len(shape) != 5 or shape[1] != 3:
        raise ValueError(f"video must be [B, 3, T, H, W]; got shape {shape}")
    _, _, t, h, w = shape
    if t < 1 or (t - 1) % FRAMES_PER_CHUNK:
        raise ValueError(
            f"video has {t} frames (shape {shape}); the Wan VAE takes 1 + 4k frames (1, 5, 9, ...)"
        )
    s = cfg.spatial_factor
    if h % s or w % s or h == 0 or w == 0:
        raise ValueError(
            f"video height and width (shape {shape}) must be positive multiples of {s}"
        )


def check_latents(cfg: VAEConfig, latents) -> None:
    """Raises ValueError naming the shape when `latents` cannot be decoded."""
    shape = tuple(np.shape(latents))
    if len(shape) != 5:
        raise ValueError(f"latents must be [B, {cfg.z_dim}, T, h, w]; got shape {shape}")
    if shape[1] != cfg.z_dim:
        raise ValueError(f"latents have {shape[1]} channels (shape {shape}); z_dim is {cfg.z_dim}")
    if min(shape[2:]) < 1:
        raise ValueError(f"latents need at least one frame and pixel; got shape {shape}")


def _patchify(x: Float[Array, "b t h w c"], p: int) -> Array:
    """`b t (h q) (w r) c -> b t h w (c r q)`: the official channel order (w offset before h)."""
    if p == 1:
        return x
    b, t, h, w, c = x.shape
    x = x.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 6, 5, 3)
    return x.reshape(b, t, h // p, w // p, c * p * p)


def _unpatchify(x: Array, p: int) -> Float[Array, "b t h w c"]:
    if p == 1:
        return x
    b, t, h, w, cpp = x.shape
    x = x.reshape(b, t, h, w, cpp // (p * p), p, p).transpose(0, 1, 2, 6, 3, 5, 4)
    return x.reshape(b, t, h * p, w * p, cpp // (p * p))


class WanVAE(nnx.Module):
    """The Wan VAE. Parameters and compute in `prec` (float32 by default, as official decodes).

    Parameter names follow diffusers' nesting (`encoder.down_blocks.{i}.resnets.{j}`, ...); the
    official and diffusers checkpoint names map onto them via `convert.keymaps_vae`.
    """

    def __init__(self, cfg: VAEConfig, prec: Precision = _FP32, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.compute_dtype = prec.compute_dtype
        kw = dict(param_dtype=prec.param_dtype, compute_dtype=prec.compute_dtype, rngs=rngs)
        self.encoder = Encoder(cfg, **kw)
        self.quant_conv = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, (1, 1, 1), **kw)
        self.post_quant_conv = CausalConv3d(cfg.z_dim, cfg.z_dim, (1, 1, 1), **kw)
        self.decoder = Decoder(cfg, **kw)

    # Public API: checked inputs, jit-compiled streams (one compilation per input shape; the
    # normalised forms share the raw forms' compilations).

    def encode_raw(self, video: Float[Array, "b 3 t h w"]) -> Float[Array, "b z tl hl wl"]:
        """Latent mean `[B, z, 1 + (T-1)/4, H/s, W/s]`, unnormalised (diffusers `encode`)."""
        check_video(self.cfg, video)
        return _encode_raw(self, jnp.asarray(video))

    def encode(self, video: Float[Array, "b 3 t h w"]) -> Float[Array, "b z tl hl wl"]:
        """`(mu - mean) / std`: the latent the DiT works on (official `Wan2_1_VAE.encode`)."""
        check_video(self.cfg, video)
        return self.normalise(_encode_raw(self, jnp.asarray(video)))

    def decode_raw(self, latents: Float[Array, "b z tl hl wl"]) -> Float[Array, "b 3 t h w"]:
        """Video `[B, 3, 1 + 4(T'-1), s*h, s*w]` in [-1, 1] from raw latents (diffusers)."""
        check_latents(self.cfg, latents)
        return _decode_raw(self, jnp.asarray(latents))

    def decode(self, latents: Float[Array, "b z tl hl wl"]) -> Float[Array, "b 3 t h w"]:
        """Video in [-1, 1] from normalised latents (official `Wan2_1_VAE.decode`)."""
        check_latents(self.cfg, latents)
        return _decode_raw(self, self.denormalise(jnp.asarray(latents)))

    # Unchecked bodies, traceable.

    def normalise(self, mu: Array) -> Array:
        """`(mu - mean) * (1 / std)`, in the official order of operations."""
        mean, inv_std = self._stats()
        return (mu - mean) * inv_std

    def denormalise(self, z: Array) -> Array:
        """`z / (1 / std) + mean`, in the official order of operations."""
        mean, inv_std = self._stats()
        return z.astype(jnp.float32) / inv_std + mean

    def _stats(self) -> tuple[Array, Array]:
        shape = (1, self.cfg.z_dim, 1, 1, 1)
        mean = jnp.asarray(self.cfg.latents_mean, jnp.float32).reshape(shape)
        inv_std = 1.0 / jnp.asarray(self.cfg.latents_std, jnp.float32).reshape(shape)
        return mean, inv_std

    def _frames_in(self, video: Float[Array, "b 3 t h w"]) -> Float[Array, "b t h w c"]:
        x = jnp.moveaxis(video, 1, -1).astype(self.compute_dtype)
        return _patchify(x, self.cfg.patch_size)

    def _frames_out(self, x: Float[Array, "b t h w c"]) -> Float[Array, "b 3 t h w"]:
        x = _unpatchify(x.astype(jnp.float32), self.cfg.patch_size)
        return jnp.moveaxis(jnp.clip(x, -1.0, 1.0), -1, 1)

    def encode_stream(self, video: Float[Array, "b 3 t h w"]) -> Float[Array, "b z tl hl wl"]:
        """Encoder over chunks [1, 4, 4, ...]; returns the raw latent mean."""
        t = video.shape[2]
        # First chunk: frame 0 alone, with no cache (zero front padding, pass-through in time).
        first, cache = self.encoder(self._frames_in(video[:, :, :1]), None)

        def step(cache, i):
            start = 1 + FRAMES_PER_CHUNK * i
            chunk = jax.lax.dynamic_slice_in_dim(video, start, FRAMES_PER_CHUNK, axis=2)
            out, cache = self.encoder(self._frames_in(chunk), cache)
            return cache, out

        outs = [first]
        if t > 1:
            _, rest = jax.lax.scan(step, cache, jnp.arange((t - 1) // FRAMES_PER_CHUNK))
            outs.append(jnp.moveaxis(rest, 0, 1).reshape(first.shape[0], -1, *first.shape[2:]))
        moments = self.quant_conv.conv(jnp.concatenate(outs, axis=1))
        mu = moments[..., : self.cfg.z_dim].astype(jnp.float32)
        return jnp.moveaxis(mu, -1, 1)

    def decode_stream(self, latents: Float[Array, "b z tl hl wl"]) -> Float[Array, "b 3 t h w"]:
        """Decoder over one latent frame at a time, into a preallocated clamped video."""
        z = self.post_quant_conv.conv(jnp.moveaxis(latents, 1, -1).astype(self.compute_dtype))
        b, tl, hl, wl, _ = z.shape
        s = self.cfg.spatial_factor
        video = jnp.zeros((b, 3, 1 + FRAMES_PER_CHUNK * (tl - 1), hl * s, wl * s), jnp.float32)
        # First chunk: latent frame 0 alone, with no cache; the temporal upsamplers skip it.
        first, cache = self.decoder(z[:, :1], None)
        video = video.at[:, :, :1].set(self._frames_out(first))

        def step(carry, i):
            video, cache = carry
            out, cache = self.decoder(jax.lax.dynamic_slice_in_dim(z, i, 1, 1), cache)
            start = 1 + FRAMES_PER_CHUNK * (i - 1)
            video = jax.lax.dynamic_update_slice_in_dim(video, self._frames_out(out), start, 2)
            return (video, cache), None

        if tl > 1:
            (video, _), _ = jax.lax.scan(step, (video, cache), jnp.arange(1, tl))
        return video


def vae_from_flat_params(
    cfg: VAEConfig, flat: Mapping[str, Any], prec: Precision = _FP32
) -> WanVAE:
    """A `WanVAE` holding `flat` (our dotted names), built without random initialisation.

    Eager random init compiles one op per parameter shape and is slow; loading skips it. Keys
    and shapes are checked by `load_flat_params`.
    """
    abstract = nnx.eval_shape(lambda: WanVAE(cfg, prec, rngs=nnx.Rngs(0)))
    model = nnx.merge(*nnx.split(abstract))
    load_flat_params(model, flat)
    return model


@nnx.jit
def _encode_raw(vae: WanVAE, video: Array) -> Array:
    return vae.encode_stream(video)


@nnx.jit
def _decode_raw(vae: WanVAE, latents: Array) -> Array:
    return vae.decode_stream(latents)
