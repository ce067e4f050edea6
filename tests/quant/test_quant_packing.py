"""Acceptance 2: encode -> decode equals fake-quant (property tests) and exhaustive code decoding."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hif4_numpy_ref import decode_group_bytes, hif4_fake_quant
from hypothesis import given, settings

from wanjax.quant import BITS_PER_VALUE, PackedWeight, fake_quant, pack, unpack
from wanjax.quant.packing import code_to_scale, scale_to_code

DIMS = st.sampled_from([3, 64, 130])  # few shapes, so most examples reuse compiled code


@st.composite
def arrays(draw):
    """Float32 arrays of random shape and magnitude 1e-30..1e30, some with zero/outlier groups."""
    shape = tuple(draw(st.lists(DIMS, min_size=1, max_size=2)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(shape) * 10.0 ** draw(st.floats(-30, 30))
    moved = np.moveaxis(x, axis, -1)  # a view: edits below land in x
    pattern = draw(st.sampled_from(["plain", "zero_group", "single_outlier"]))
    if pattern == "zero_group":
        moved[..., :64] = 0.0
    elif pattern == "single_outlier":
        moved[..., min(5, moved.shape[-1] - 1)] *= 10.0 ** draw(st.floats(1, 6))
    return x.astype(np.float32), axis


@settings(max_examples=30, deadline=None)
@given(arrays())
def test_pack_unpack_equals_fake_quant_and_spec(case):
    x, axis = case
    want = hif4_fake_quant(x, axis)
    packed = pack(jnp.asarray(x), axis=axis)
    assert packed.bits_per_value() == BITS_PER_VALUE == 4.5
    assert packed.codes.dtype == packed.scales.dtype == jnp.uint8
    assert np.array_equal(np.asarray(fake_quant(jnp.asarray(x), "hif4", axis)), want)
    unpacked = np.asarray(unpack(packed))
    assert unpacked.dtype == np.float32 and unpacked.shape == x.shape
    assert np.array_equal(unpacked, want)


@settings(max_examples=15, deadline=None)
@given(arrays())
def test_packed_bytes_follow_the_spec_layout(case):
    """Decode our bytes with the bit-by-bit spec decoder of the test module."""
    x, axis = case
    packed = pack(jnp.asarray(x), axis=axis)
    groups = np.asarray(packed.canonical_bytes()).reshape(-1, 36)
    decoded = np.stack([decode_group_bytes(g) for g in groups])
    want = np.moveaxis(hif4_fake_quant(x, axis), axis, -1)
    n = want.shape[-1]
    decoded = decoded.reshape(*want.shape[:-1], -1)[..., :n]
    assert np.array_equal(decoded.astype(np.float32), want)


def _packed_from_groups(code_bytes: np.ndarray, scale_bytes: np.ndarray) -> PackedWeight:
    n = code_bytes.shape[0]
    return PackedWeight(
        codes=jnp.asarray(code_bytes, jnp.uint8)[:, None, :],
        scales=jnp.asarray(scale_bytes, jnp.uint8)[:, None, :],
        shape=(n, 64),
        axis=1,
    )


def test_every_element_code_and_scale_code_decodes_as_specified():
    """All 16 element codes x 4 (a, b) x 256 E6M2 codes, one group per combination."""
    combos = list(itertools.product(range(16), (0, 1), (0, 1), range(256)))
    code, a, b, e6m2 = (np.array(c) for c in zip(*combos, strict=True))
    code_bytes = np.repeat(((code << 4) | code)[:, None], 32, axis=1)
    scale_bytes = np.stack([e6m2, a * 0xFF, b * 0xFF, b * 0xFF], axis=1)
    got = np.asarray(unpack(_packed_from_groups(code_bytes, scale_bytes)))

    sign = np.where(code >> 3, -1.0, 1.0)
    scale = (1 + (e6m2 & 3) / 4) * 2.0 ** ((e6m2 >> 2) - 48)
    want = sign * ((code & 7) / 4) * 2.0 ** (a + b) * scale
    want = np.where(e6m2 == 0xFF, np.nan, want)
    np.testing.assert_array_equal(got, np.repeat(want[:, None], 64, axis=1).astype(np.float32))
    assert np.all(got[(code == 0b1000) & (e6m2 != 0xFF)] == 0)  # negative zero decodes to zero


def test_every_e6m2_value_encodes_to_its_code():
    codes = np.arange(255)
    values = (1 + (codes & 3) / 4) * 2.0 ** ((codes >> 2) - 48)
    assert values.max() == 49152 and values.min() == 2.0**-48
    got = np.asarray(scale_to_code(jnp.asarray(values, jnp.float32)))
    np.testing.assert_array_equal(got, codes)
    np.testing.assert_array_equal(np.asarray(code_to_scale(jnp.asarray(codes, jnp.uint8))), values)
    assert np.isnan(np.asarray(code_to_scale(jnp.uint8(0xFF))))
    assert int(scale_to_code(jnp.float32(jnp.nan))) == 0xFF


def test_random_bytes_decode_bit_by_bit():
    """Per-element bit positions of the sign, q, a_j and b_k fields, on random groups."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (64, 36), dtype=np.uint8)
    data[:, 32] = rng.integers(0, 255, 64)  # finite scales
    got = np.asarray(unpack(_packed_from_groups(data[:, :32], data[:, 32:])))
    want = np.stack([decode_group_bytes(g) for g in data]).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def test_layout_moves_the_quantized_axis_last():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((130, 5, 7)), jnp.float32)
    packed = pack(x, axis=0)
    assert packed.codes.shape == (5, 7, 3, 32) and packed.scales.shape == (5, 7, 3, 4)
    assert packed.shape == (130, 5, 7) and packed.axis == 0 and packed.fmt == "hif4"
    assert packed.canonical_bytes().shape == (5, 7, 3, 36)


def test_pack_under_jit_and_vmap():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 3, 128)), jnp.float32)
    jitted = jax.jit(lambda v: pack(v, axis=-1))(x)
    mapped = jax.vmap(lambda v: fake_quant(v, "hif4", -1), in_axes=1, out_axes=1)(x)
    want = hif4_fake_quant(np.asarray(x), -1)
    assert np.array_equal(np.asarray(unpack(jitted)), want)
    assert np.array_equal(np.asarray(mapped), want)


def test_nonfinite_weights_are_an_error_and_nan_under_jit():
    x = np.random.default_rng(3).standard_normal((2, 128)).astype(np.float32)
    x[0, 3] = np.nan
    x[1, 70] = np.inf
    with pytest.raises(ValueError, match=r"\(2, 128\): 2 NaN/Inf"):
        pack(jnp.asarray(x))
    packed = jax.jit(pack)(jnp.asarray(x))
    got = np.asarray(unpack(packed))
    assert np.isnan(got[0, :64]).all() and np.isfinite(got[0, 64:]).all()
    assert np.isnan(got[1, 64:]).all() and np.isfinite(got[1, :64]).all()
    assert np.array_equal(np.isnan(got), np.isnan(np.asarray(fake_quant(jnp.asarray(x)))))


def test_pack_rejects_other_formats_and_non_float():
    with pytest.raises(ValueError, match="pack supports formats"):
        pack(jnp.ones((2, 64)), fmt="nvfp4")
    with pytest.raises(ValueError, match="floating"):
        pack(jnp.ones((2, 64), jnp.int32))
