"""Packed HiF4 weights: the canonical 36 bytes per 64-value group, as a pytree.

Layout (spec "Canonical packed bytes"): the quantized axis is moved last, zero-padded to a
multiple of 64 and split into groups, so an `[out, in]` weight packed along `in` (or a Flax
kernel `[in, out]` packed along axis 0) becomes `codes [out, n_groups, 32]` and
`scales [out, n_groups, 4]`:

- `codes[..., p]`: element 2p in the high nibble, 2p+1 in the low nibble; a code is
  `sign << 3 | q` (sign 1 = negative; 0b1000 decodes to zero).
- `scales[..., 0]`: the E6M2 byte `(e + 48) << 2 | m` (0xFF, i.e. 1.75 * 2^15, is NaN);
  `scales[..., 1]`: the 8 per-8 bits, first sub-block in the MSB;
  `scales[..., 2:4]`: the 16 per-4 bits, first micro-block in the MSB of byte 2.
  Bytes 0-1 and 2-3 are the spec's two 16-bit words in big-endian (high byte first) order.

`concatenate(codes, scales)` along the last axis gives the 36 interchange bytes of each group.

Checkpointing: `codes` and `scales` are the pytree leaves; `shape`, `axis` and `fmt` are static
metadata (part of the treedef), which orbax does not store. Restore with a target built by
`abstract_packed(shape, axis)` (or `jax.eval_shape` of the original), and the metadata comes back
from the target.
"""

from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, UInt8

from wanjax.quant import floatbits, grouping, hif4

CODE_BYTES = hif4.GROUP_SIZE // 2  # two 4-bit codes per byte
SCALE_BYTES = 4  # E6M2 byte, 8 per-8 bits, 16 per-4 bits
BITS_PER_VALUE = 8 * (CODE_BYTES + SCALE_BYTES) / hif4.GROUP_SIZE  # 4.5
E6M2_BIAS = 48
E6M2_NAN = 0xFF
PACKABLE_FORMATS = ("hif4",)


@flax.struct.dataclass
class PackedWeight:
    """A HiF4-packed array: uint8 codes and scales, plus the static metadata to unpack it.

    `shape` is the original (unpadded) shape, `axis` the non-negative quantized axis.
    """

    codes: UInt8[Array, "... n_groups 32"]
    scales: UInt8[Array, "... n_groups 4"]
    shape: tuple[int, ...] = flax.struct.field(pytree_node=False)
    axis: int = flax.struct.field(pytree_node=False)
    fmt: str = flax.struct.field(pytree_node=False, default="hif4")

    def bits_per_value(self) -> float:
        """Stored bits per stored (padded) value: 4.5 for HiF4 by construction."""
        stored = math.prod(self.codes.shape) + math.prod(self.scales.shape)
        return 8 * stored / (math.prod(self.codes.shape[:-1]) * hif4.GROUP_SIZE)

    def canonical_bytes(self) -> UInt8[Array, "... n_groups 36"]:
        """The 36 interchange bytes per group: 32 code bytes, then the 4 scale bytes."""
        return jnp.concatenate([self.codes, self.scales], axis=-1)


def _bits_to_bytes(bits: Array) -> UInt8[Array, "*shape"]:
    """Booleans `[..., 8k]` to bytes `[..., k]`, first boolean in the most significant bit."""
    grouped = bits.reshape(*bits.shape[:-1], -1, 8).astype(jnp.uint32)
    weights = jnp.asarray([1 << (7 - i) for i in range(8)], jnp.uint32)
    return jnp.sum(grouped * weights, axis=-1).astype(jnp.uint8)


def _bytes_to_bits(data: UInt8[Array, "*shape"]) -> Array:
    """Inverse of `_bits_to_bytes`."""
    shifts = jnp.asarray([7 - i for i in range(8)], jnp.uint8)
    bits = (data[..., None] >> shifts) & jnp.uint8(1)
    return bits.reshape(*data.shape[:-1], -1).astype(bool)


def scale_to_code(scale: Float[Array, "*shape"]) -> UInt8[Array, "*shape"]:
    """E6M2 value (or NaN) to its byte `(e + 48) << 2 | m`."""
    finite_scale = jnp.nan_to_num(scale, nan=1.0)
    mantissa = (jax.lax.bitcast_convert_type(finite_scale, jnp.uint32) >> 21) & jnp.uint32(3)
    biased = (floatbits.exponent(finite_scale) + E6M2_BIAS).astype(jnp.uint32)
    code = ((biased << 2) | mantissa).astype(jnp.uint8)
    return jnp.where(jnp.isnan(scale), jnp.uint8(E6M2_NAN), code)


def code_to_scale(code: UInt8[Array, "*shape"]) -> Float[Array, "*shape"]:
    """E6M2 byte to `(1 + m/4) * 2^e` as float32; 0xFF is NaN."""
    code = code.astype(jnp.uint32)
    exponent = (code >> 2).astype(jnp.int32) - E6M2_BIAS
    mantissa = code & jnp.uint32(3)
    value = jax.lax.bitcast_convert_type(floatbits.pow2(exponent), jnp.uint32) | (mantissa << 21)
    value = jax.lax.bitcast_convert_type(value, jnp.float32)
    return jnp.where(code == E6M2_NAN, jnp.nan, value)


def encode(fields: hif4.HiF4Groups) -> tuple[UInt8[Array, "... 32"], UInt8[Array, "... 4"]]:
    """HiF4 fields to the canonical code bytes and scale bytes."""
    nibbles = (fields.negative.astype(jnp.uint8) << 3) | fields.q
    codes = (nibbles[..., 0::2] << 4) | nibbles[..., 1::2]
    scales = jnp.concatenate(
        [
            scale_to_code(fields.scale)[..., None],
            _bits_to_bytes(fields.sub8),
            _bits_to_bytes(fields.sub4),
        ],
        axis=-1,
    )
    return codes, scales


def decode(codes: UInt8[Array, "... 32"], scales: UInt8[Array, "... 4"]) -> hif4.HiF4Groups:
    """Canonical bytes back to HiF4 fields."""
    nibbles = jnp.stack([codes >> 4, codes & jnp.uint8(0xF)], axis=-1)
    nibbles = nibbles.reshape(*codes.shape[:-1], hif4.GROUP_SIZE)
    return hif4.HiF4Groups(
        negative=(nibbles >> 3).astype(bool),
        q=nibbles & jnp.uint8(7),
        sub8=_bytes_to_bits(scales[..., 1:2]),
        sub4=_bytes_to_bits(scales[..., 2:4]),
        scale=code_to_scale(scales[..., 0]),
    )


@functools.partial(jax.jit, static_argnames=("axis",))
def _pack_arrays(x: Float[Array, "*shape"], axis: int) -> tuple[Array, Array]:
    groups = grouping.to_groups(x.astype(jnp.float32), axis, hif4.GROUP_SIZE)
    return encode(hif4.quantize_groups(groups))


def pack(x: Float[Array, "*shape"], fmt: str = "hif4", axis: int = -1) -> PackedWeight:
    """Quantize a weight to HiF4 once and pack it (groups of 64 along `axis`).

    Weights with NaN/Inf are an error: with concrete input this raises ValueError; under `jit`
    (values unknown) such a group gets the E6M2 NaN code and unpacks to NaN.
    """
    if fmt not in PACKABLE_FORMATS:
        raise ValueError(
            f"pack supports formats {PACKABLE_FORMATS}, got {fmt!r}; use fake_quant for the others"
        )
    grouping.check_floating(x, "weight")
    axis = grouping.normalize_axis(axis, x.ndim)
    if not isinstance(x, jax.core.Tracer):
        bad = int(np.sum(~np.isfinite(np.asarray(x, np.float32))))
        if bad:
            raise ValueError(f"cannot quantize a weight of shape {x.shape}: {bad} NaN/Inf values")
    codes, scales = _pack_arrays(x, axis)
    packed = PackedWeight(codes=codes, scales=scales, shape=tuple(x.shape), axis=axis, fmt=fmt)
    assert packed.bits_per_value() == BITS_PER_VALUE == 4.5, packed.bits_per_value()
    return packed


@functools.partial(jax.jit, static_argnames=("shape", "axis"))
def _unpack_arrays(codes: Array, scales: Array, shape: tuple[int, ...], axis: int) -> Array:
    values = hif4.dequantize_groups(decode(codes, scales))
    return grouping.from_groups(values, shape, axis)


def unpack(packed: PackedWeight) -> Float[Array, "*shape"]:
    """The dequantized float32 array, with the original shape (equals `fake_quant(x, 'hif4')`)."""
    if packed.fmt not in PACKABLE_FORMATS:
        raise ValueError(f"cannot unpack format {packed.fmt!r}; valid: {PACKABLE_FORMATS}")
    want = abstract_packed(packed.shape, packed.axis, packed.fmt)
    if (packed.codes.shape, packed.scales.shape) != (want.codes.shape, want.scales.shape):
        raise ValueError(
            f"packed arrays codes {packed.codes.shape} / scales {packed.scales.shape} do not fit "
            f"shape {packed.shape} along axis {packed.axis}: expected {want.codes.shape} / "
            f"{want.scales.shape}"
        )
    return _unpack_arrays(packed.codes, packed.scales, packed.shape, packed.axis)


def abstract_packed(shape: tuple[int, ...], axis: int = -1, fmt: str = "hif4") -> PackedWeight:
    """A `PackedWeight` of `jax.ShapeDtypeStruct`s: the restore target for a checkpoint."""
    axis = grouping.normalize_axis(axis, len(shape))
    lead = tuple(s for i, s in enumerate(shape) if i != axis)
    n_groups = grouping.num_groups(shape[axis], hif4.GROUP_SIZE)
    return PackedWeight(
        codes=jax.ShapeDtypeStruct((*lead, n_groups, CODE_BYTES), jnp.uint8),
        scales=jax.ShapeDtypeStruct((*lead, n_groups, SCALE_BYTES), jnp.uint8),
        shape=tuple(shape),
        axis=axis,
        fmt=fmt,
    )
