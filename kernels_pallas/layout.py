"""The kernel layout of a HiF4 weight: 32-bit words whose 4-bit planes each hold one whole group.

The canonical packing (`wanjax.quant.pack(W, 'hif4', axis=0)` of a Flax kernel `W[K, N]`) stores
each 64-value group as 36 contiguous bytes per output column `n`: `codes [N, K/64, 32]`,
`scales [N, K/64, 4]`. A matmul tile wants the reduction axis K on rows and N on lanes instead,
and a group's 64 codes on 64 consecutive rows so that the group scale is one broadcast row.
`TiledWeight` is that layout; the conversion is lossless both ways and done once, at load time.

Chunks of 512 K-rows (8 groups) become 64 rows of uint32 words:

    codes[64 c + r, n] >> 4 p & 0xF  = code of W[512 c + 64 p + r, n]      (plane p = group 8c + p)
    scales[g, n]                      = canonical scale bytes 0..3 of group g, big-endian:
                                        E6M2 << 24 | per-8 bits << 16 | per-4 bits

so unpacking plane p of a `[64, bn]` word tile is one shift and one mask, gives the 64 rows of
group 8c + p in order, and needs no interleave, concatenate or value slicing (which Triton cannot
lower and TPU turns into sublane shuffles). Row r of a group uses per-8 bit r >> 3 (bit 23 - j of
the scale word) and per-4 bit r >> 2 (bit 15 - k). Storage stays at 4.5 bits per value.

K is zero-padded to a multiple of 512 and N to a multiple of 128 (padded groups have all-zero
codes, so they dequantize to 0); every Wan A14B K (5120, 13824) and N is already a multiple.
"""

from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, UInt8, UInt32

from wanjax.quant import PackedWeight, abstract_packed

GROUP = 64  # values per HiF4 group
PLANES = 8  # 4-bit planes per 32-bit word
CHUNK = GROUP * PLANES  # K-rows covered by one 64-row word tile
LANES = 128  # N is padded to a multiple of this
E6M2_NAN = 0xFF


@flax.struct.dataclass
class TiledWeight:
    """A HiF4 weight `W[K, N]` in the kernel layout (see the module docstring).

    `codes` is `[K_pad // 8, N_pad]` uint32, `scales` is `[K_pad // 64, N_pad]` uint32, and
    `shape` is the unpadded `(K, N)`.
    """

    codes: UInt32[Array, "k_words n_pad"]
    scales: UInt32[Array, "k_groups n_pad"]
    shape: tuple[int, int] = flax.struct.field(pytree_node=False)

    @property
    def padded_shape(self) -> tuple[int, int]:
        return padded_shape(self.shape)

    def nbytes(self) -> int:
        return 4 * (math.prod(self.codes.shape) + math.prod(self.scales.shape))


def padded_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """`(K, N)` rounded up to multiples of 512 and 128."""
    k, n = shape
    return -(-k // CHUNK) * CHUNK, -(-n // LANES) * LANES


def abstract_tiled(shape: tuple[int, int]) -> TiledWeight:
    """A `TiledWeight` of `jax.ShapeDtypeStruct`s (for `eval_shape`, lowering and restore)."""
    k_pad, n_pad = padded_shape(shape)
    return TiledWeight(
        codes=jax.ShapeDtypeStruct((k_pad // PLANES, n_pad), jnp.uint32),
        scales=jax.ShapeDtypeStruct((k_pad // GROUP, n_pad), jnp.uint32),
        shape=tuple(shape),
    )


def check_tiled(w: TiledWeight) -> None:
    """ValueError unless the arrays have the dtypes and shapes that `w.shape` implies."""
    want = abstract_tiled(w.shape)
    for name in ("codes", "scales"):
        got, ref = getattr(w, name), getattr(want, name)
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise ValueError(
                f"TiledWeight.{name} must be {ref.dtype}{list(ref.shape)} for shape {w.shape}, "
                f"got {got.dtype}{list(got.shape)}"
            )


def _check_canonical(packed: PackedWeight) -> tuple[int, int]:
    if not isinstance(packed, PackedWeight):
        raise ValueError(f"expected a wanjax.quant.PackedWeight, got {type(packed).__name__}")
    if packed.fmt != "hif4":
        raise ValueError(f"only HiF4 weights can be tiled, got format {packed.fmt!r}")
    if len(packed.shape) != 2 or packed.axis != 0:
        raise ValueError(
            "expected a Flax kernel W[K, N] packed along K, i.e. pack(W, 'hif4', axis=0); got "
            f"shape {packed.shape} packed along axis {packed.axis}"
        )
    want = abstract_packed(packed.shape, 0)
    if (packed.codes.shape, packed.scales.shape) != (want.codes.shape, want.scales.shape):
        raise ValueError(
            f"packed arrays codes {packed.codes.shape} / scales {packed.scales.shape} do not fit "
            f"shape {packed.shape}: expected {want.codes.shape} / {want.scales.shape}"
        )
    return packed.shape


def _check_no_nan_scale(scales: Array) -> None:
    """The kernels decode E6M2 arithmetically; the NaN code 0xFF (a NaN weight) would decode as a
    finite number, so refuse it whenever the values are visible."""
    if isinstance(scales, jax.core.Tracer):
        return
    bad = int(np.sum(np.asarray(scales[..., 0]) == E6M2_NAN))
    if bad:
        raise ValueError(f"{bad} groups have the NaN scale code 0xFF (a NaN/Inf weight)")


def to_tiled(packed: PackedWeight) -> TiledWeight:
    """Canonical `pack(W, 'hif4', axis=0)` of `W[K, N]` -> the kernel layout (lossless)."""
    k, n = _check_canonical(packed)
    _check_no_nan_scale(packed.scales)
    return _to_tiled_arrays(packed.codes, packed.scales, (k, n))


@functools.partial(jax.jit, static_argnames=("shape",))
def _to_tiled_arrays(
    codes: UInt8[Array, "n groups 32"], scales: UInt8[Array, "n groups 4"], shape: tuple[int, int]
) -> TiledWeight:
    k_pad, n_pad = padded_shape(shape)
    n, groups = codes.shape[:2]
    pad_groups, pad_n = k_pad // GROUP - groups, n_pad - n

    nibbles = jnp.stack([codes >> 4, codes & jnp.uint8(0xF)], axis=-1).reshape(n, groups, GROUP)
    nibbles = jnp.pad(nibbles, ((0, pad_n), (0, pad_groups), (0, 0))).astype(jnp.uint32)
    planes = nibbles.reshape(n_pad, k_pad // CHUNK, PLANES, GROUP)  # [n, c, p, r]
    shifts = (4 * jnp.arange(PLANES, dtype=jnp.uint32))[None, None, :, None]
    words = jnp.sum(planes << shifts, axis=2, dtype=jnp.uint32)  # disjoint bits: sum == or
    words = jnp.transpose(words, (1, 2, 0)).reshape(k_pad // PLANES, n_pad)

    s = scales.astype(jnp.uint32)
    scale_words = s[..., 0] << 24 | s[..., 1] << 16 | s[..., 2] << 8 | s[..., 3]
    scale_words = jnp.pad(scale_words, ((0, pad_n), (0, pad_groups))).T
    return TiledWeight(codes=words, scales=scale_words, shape=shape)


def to_canonical(w: TiledWeight) -> PackedWeight:
    """Inverse of `to_tiled`: the canonical `PackedWeight` (checkpoint interchange bytes)."""
    check_tiled(w)
    codes, scales = _to_canonical_arrays(w.codes, w.scales, w.shape)
    return PackedWeight(codes=codes, scales=scales, shape=w.shape, axis=0, fmt="hif4")


@functools.partial(jax.jit, static_argnames=("shape",))
def _to_canonical_arrays(
    words: UInt32[Array, "k_words n_pad"], scale_words: UInt32[Array, "k_groups n_pad"],
    shape: tuple[int, int],
) -> tuple[Array, Array]:
    k, n = shape
    k_pad, n_pad = padded_shape(shape)
    groups = -(-k // GROUP)

    w = words.reshape(k_pad // CHUNK, GROUP, n_pad)  # [c, r, n]
    shifts = (4 * jnp.arange(PLANES, dtype=jnp.uint32))[None, :, None, None]
    nibbles = (w[:, None] >> shifts) & jnp.uint32(0xF)  # [c, p, r, n]
    nibbles = jnp.transpose(nibbles, (3, 0, 1, 2)).reshape(n_pad, k_pad // GROUP, GROUP)
    nibbles = nibbles[:n, :groups].astype(jnp.uint8)
    codes = (nibbles[..., 0::2] << 4) | nibbles[..., 1::2]

    s = scale_words[:groups, :n].T
    scales = jnp.stack([s >> 24, s >> 16, s >> 8, s], axis=-1) & jnp.uint32(0xFF)
    return codes, scales.astype(jnp.uint8)
