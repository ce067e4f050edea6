"""Building blocks of the Wan VAE (spec section 5) on channels-last video `[B, T, H, W, C]`.

Streaming contract. The VAE runs over a video in chunks (encode: 1, 4, 4, ... frames; decode: one
latent frame at a time). Every module whose output depends on earlier frames takes `cache`, the
state the previous chunk left behind, and returns `(y, new_cache)`. `cache=None` marks the first
chunk of a stream. For causal convolutions that is the same as a cache of zero frames (the
official zero front padding); the temporal resamplers have real first-chunk special cases,
documented on `Downsample` and `Upsample`. A cache is a pytree of arrays whose structure and shapes
are the same after every chunk, so it can be the carry of `lax.scan`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

DType = jnp.dtype | type
Cache = Any  # a pytree of arrays, or None before the first chunk
Video = Float[Array, "b t h w c"]

CACHE_FRAMES = 2  # input frames a causal 3x3x3 convolution keeps (official CACHE_T)
_KERNEL_INIT = nnx.initializers.lecun_normal()


def part(cache: Cache, i: int) -> Cache:
    """Entry `i` of a composite cache; None (first chunk) stays None."""
    return None if cache is None else cache[i]


def _convolve(
    x: Array, kernel: Array, bias: Array, strides, padding, compute_dtype: DType
) -> Array:
    """Channels-last N-d convolution in `compute_dtype` with float32 accumulation."""
    layout = {4: ("NHWC", "HWIO", "NHWC"), 5: ("NDHWC", "DHWIO", "NDHWC")}[kernel.ndim]
    y = jax.lax.conv_general_dilated(
        x.astype(compute_dtype),
        kernel.astype(compute_dtype),
        window_strides=strides,
        padding=padding,
        dimension_numbers=layout,
        preferred_element_type=jnp.float32,
    )
    return (y + bias.astype(jnp.float32)).astype(compute_dtype)


def per_frame(fn, x: Video) -> Video:
    """Applies a 2-D op `[N, H, W, C] -> [N, H', W', C']` to every frame of `x`."""
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class Conv2d(nnx.Module):
    """2-D convolution on `[N, H, W, C]`; `padding` is `((top, bottom), (left, right))`."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
        param_dtype: DType,
        compute_dtype: DType,
        rngs: nnx.Rngs,
    ):
        shape = (kernel_size, kernel_size, in_dim, out_dim)
        self.kernel = nnx.Param(_KERNEL_INIT(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_dim,), param_dtype))
        self.stride = (stride, stride)
        self.padding = padding
        self.compute_dtype = compute_dtype

    def __call__(self, x: Float[Array, "n h w c"]) -> Float[Array, "n h2 w2 o"]:
        return _convolve(
            x, self.kernel[...], self.bias[...], self.stride, self.padding, self.compute_dtype
        )


class CausalConv3d(nnx.Module):
    """3-D convolution that is causal in time (official `CausalConv3d`).

    A temporal padding `p` becomes `2p` frames in front and none behind; height and width are
    zero-padded by their `p` on both sides. In a stream the `2p` front frames are the last `2p`
    input frames seen before this chunk (the cache): zeros on the first chunk.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_size: tuple[int, int, int],
        *,
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: tuple[int, int, int] = (0, 0, 0),
        param_dtype: DType,
        compute_dtype: DType,
        rngs: nnx.Rngs,
    ):
        shape = (*kernel_size, in_dim, out_dim)
        self.kernel = nnx.Param(_KERNEL_INIT(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_dim,), param_dtype))
        self.stride = tuple(stride)
        self.context_frames = 2 * padding[0]
        self.spatial_padding = ((0, 0), (padding[1], padding[1]), (padding[2], padding[2]))
        self.compute_dtype = compute_dtype

    def conv(self, x: Video) -> Video:
        """The convolution of `x` as given, with no temporal padding (the caller adds context)."""
        return _convolve(
            x, self.kernel[...], self.bias[...], self.stride, self.spatial_padding,
            self.compute_dtype,
        )

    def __call__(self, x: Video, cache: Array | None) -> tuple[Video, Array]:
        """`(y, new_cache)`: `cache` holds the `2p` frames before `x` (None: zeros, first chunk)."""
        n = self.context_frames
        if n == 0:
            raise ValueError("a CausalConv3d without temporal padding has no cache; call .conv()")
        if cache is None:
            cache = jnp.zeros((x.shape[0], n, *x.shape[2:]), x.dtype)
        stream = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
        return self.conv(stream), stream[:, stream.shape[1] - n :]


class L2RMSNorm(nnx.Module):
    """Official `RMS_norm`: `F.normalize(x, dim=channels) * sqrt(C) * gamma`, no bias.

    An L2 normalisation with the norm clamped at 1e-12, not `rsqrt(mean(x^2) + eps)`; computed in
    float32 and returned in the input dtype. `scale` is the official `gamma` squeezed to `(C,)`.
    """

    def __init__(self, dim: int, *, param_dtype: DType, rngs: nnx.Rngs):
        del rngs
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.root_dim = float(dim) ** 0.5

    def __call__(self, x: Float[Array, "... c"]) -> Float[Array, "... c"]:
        h = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(h), axis=-1, keepdims=True))
        h = h / jnp.maximum(norm, 1e-12)
        return (h * self.root_dim * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class ResidualBlock(nnx.Module):
    """`RMS, SiLU, conv3, RMS, SiLU, conv3` plus a 1x1x1-conv (or identity) shortcut.

    Official keys `residual.{0,2,3,6}` and `shortcut`; dropout is 0 at inference and omitted.
    """

    def __init__(self, in_dim: int, out_dim: int, *, param_dtype, compute_dtype, rngs):
        conv = dict(param_dtype=param_dtype, compute_dtype=compute_dtype, rngs=rngs)
        self.norm1 = L2RMSNorm(in_dim, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = CausalConv3d(in_dim, out_dim, (3, 3, 3), padding=(1, 1, 1), **conv)
        self.norm2 = L2RMSNorm(out_dim, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = CausalConv3d(out_dim, out_dim, (3, 3, 3), padding=(1, 1, 1), **conv)
        self.shortcut = (
            CausalConv3d(in_dim, out_dim, (1, 1, 1), **conv) if in_dim != out_dim else None
        )

    def __call__(self, x: Video, cache: Cache) -> tuple[Video, Cache]:
        skip = x if self.shortcut is None else self.shortcut.conv(x)
        h, cache1 = self.conv1(jax.nn.silu(self.norm1(x)), part(cache, 0))
        h, cache2 = self.conv2(jax.nn.silu(self.norm2(h)), part(cache, 1))
        return h + skip, (cache1, cache2)


class AttentionBlock(nnx.Module):
    """Single-head self-attention within each frame over its `h*w` positions, plus the residual.

    Stateless across frames, so it needs no cache. `to_qkv` and `proj` are the official 1x1
    Conv2d layers; q, k, v are the three consecutive channel thirds of `to_qkv`.
    """

    def __init__(self, dim: int, *, param_dtype, compute_dtype, rngs):
        conv = dict(param_dtype=param_dtype, compute_dtype=compute_dtype, rngs=rngs)
        self.norm = L2RMSNorm(dim, param_dtype=param_dtype, rngs=rngs)
        self.to_qkv = Conv2d(dim, 3 * dim, 1, **conv)
        self.proj = Conv2d(dim, dim, 1, **conv)

    def __call__(self, x: Video) -> Video:
        b, t, h, w, c = x.shape
        qkv = per_frame(self.to_qkv, self.norm(x)).reshape(b * t, h * w, 1, 3 * c)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        out = jax.nn.dot_product_attention(q, k, v, implementation="xla")
        out = per_frame(self.proj, out.reshape(b, t, h, w, c))
        return x + out


class Downsample(nnx.Module):
    """Spatial /2: zero-pad right and bottom by one, then a stride-2 3x3 conv (`resample.1`).

    With `temporal=True` (official `downsample3d`) time is halved too by `time_conv`, a (3,1,1)
    stride-2 conv without padding fed the previous chunk's last frame as left context.
    First chunk: its frame(s) pass through unchanged in time (frame 0 is never merged), and the
    last one is remembered. Later chunks of 2n frames become n frames.
    """

    def __init__(self, dim: int, *, temporal: bool, param_dtype, compute_dtype, rngs):
        conv = dict(param_dtype=param_dtype, compute_dtype=compute_dtype, rngs=rngs)
        self.conv = Conv2d(dim, dim, 3, stride=2, padding=((0, 1), (0, 1)), **conv)
        self.time_conv = (
            CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), **conv) if temporal else None
        )

    def __call__(self, x: Video, cache: Cache) -> tuple[Video, Cache]:
        x = per_frame(self.conv, x)
        if self.time_conv is None:
            return x, None
        if cache is None:
            return x, x[:, -1:]
        return self.time_conv.conv(jnp.concatenate([cache, x], axis=1)), x[:, -1:]


def upsample_nearest2x(x: Video) -> Video:
    """`nearest-exact` x2 in height and width: at an integer factor every pixel is repeated."""
    return jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)


class Upsample(nnx.Module):
    """Spatial x2: nearest-exact upsampling, then a 3x3 conv to `out_dim` (`resample.1`).

    With `temporal=True` (official `upsample3d`) `time_conv`, a causal (3,1,1) conv to `2*dim`
    channels, first doubles time: the two channel halves become two consecutive frames.
    First chunk (official cache marker 'Rep'): `time_conv` is skipped, so latent frame 0 yields
    one frame, and the cache stays zero: the causal stream of `time_conv` starts at the second
    chunk, behind two zero frames.
    """

    def __init__(self, dim: int, out_dim: int, *, temporal: bool, param_dtype, compute_dtype, rngs):
        conv = dict(param_dtype=param_dtype, compute_dtype=compute_dtype, rngs=rngs)
        self.time_conv = (
            CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0), **conv) if temporal else None
        )
        self.conv = Conv2d(dim, out_dim, 3, padding=((1, 1), (1, 1)), **conv)

    def __call__(self, x: Video, cache: Cache) -> tuple[Video, Cache]:
        if self.time_conv is not None:
            if cache is None:
                b, _, h, w, c = x.shape
                cache = jnp.zeros((b, CACHE_FRAMES, h, w, c), x.dtype)
            else:
                y, cache = self.time_conv(x, cache)
                b, t, h, w, _ = y.shape
                x = y.reshape(b, t, h, w, 2, -1).transpose(0, 1, 4, 2, 3, 5)
                x = x.reshape(b, 2 * t, h, w, -1)
        return per_frame(self.conv, upsample_nearest2x(x)), cache


def space_time_to_channels(x: Video, factor_t: int, factor_s: int) -> Video:
    """Folds `factor_t x factor_s x factor_s` blocks into channels, ordered `(c, t, h, w)`."""
    b, t, h, w, c = x.shape
    x = x.reshape(b, t // factor_t, factor_t, h // factor_s, factor_s, w // factor_s, factor_s, c)
    x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, t // factor_t, h // factor_s, w // factor_s, -1)


def channels_to_space_time(x: Video, factor_t: int, factor_s: int) -> Video:
    """Inverse of `space_time_to_channels`."""
    b, t, h, w, cf = x.shape
    c = cf // (factor_t * factor_s * factor_s)
    x = x.reshape(b, t, h, w, c, factor_t, factor_s, factor_s)
    x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, t * factor_t, h * factor_s, w * factor_s, c)


def average_down(x: Video, out_dim: int, factor_t: int, factor_s: int) -> Video:
    """Wan2.2 `AvgDown3D` shortcut: fold blocks into channels, average groups down to `out_dim`.

    A chunk whose length is not a multiple of `factor_t` (the 1-frame first chunk) is zero-padded
    in front first.
    """
    pad = -x.shape[1] % factor_t
    x = jnp.pad(x, ((0, 0), (pad, 0), (0, 0), (0, 0), (0, 0)))
    x = space_time_to_channels(x, factor_t, factor_s)
    return x.reshape(*x.shape[:-1], out_dim, -1).mean(axis=-1)


def duplicate_up(x: Video, out_dim: int, factor_t: int, factor_s: int, first_chunk: bool) -> Video:
    """Wan2.2 `DupUp3D` shortcut: repeat channels, unfold them into time and space.

    On the first chunk the first `factor_t - 1` frames are dropped, matching `Upsample`, which
    does not double latent frame 0.
    """
    repeats = out_dim * factor_t * factor_s * factor_s // x.shape[-1]
    x = channels_to_space_time(jnp.repeat(x, repeats, axis=-1), factor_t, factor_s)
    return x[:, factor_t - 1 :] if first_chunk else x
