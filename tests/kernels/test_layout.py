"""The kernel layout: lossless both ways, placed as documented, decoded bit-exactly; input checks."""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_refs import decode_canonical, fresh_rng, random_packed

from kernels_pallas import TiledWeight, abstract_tiled, dequantize, to_canonical, to_tiled
from kernels_pallas.dispatch import _tiled_cache, as_tiled
from wanjax.quant import PackedWeight, pack, unpack


@pytest.mark.parametrize(("k", "n"), [(1024, 256), (200, 72), (64, 640), (1600, 130)])
def test_round_trip_is_lossless_and_dequantizes_exactly(k, n):
    rng, seed = fresh_rng()
    packed = random_packed(rng, k, n)
    tiled = to_tiled(packed)
    k_pad, n_pad = -(-k // 512) * 512, -(-n // 128) * 128
    assert tiled.codes.shape == (k_pad // 8, n_pad) and tiled.codes.dtype == jnp.uint32
    assert tiled.scales.shape == (k_pad // 64, n_pad) and tiled.scales.dtype == jnp.uint32
    back = to_canonical(tiled)
    assert (back.shape, back.axis, back.fmt) == (packed.shape, 0, "hif4")
    assert np.array_equal(back.codes, packed.codes), f"seed={seed}"
    assert np.array_equal(back.scales, packed.scales), f"seed={seed}"
    got = np.asarray(dequantize(tiled))
    assert np.array_equal(got, np.asarray(unpack(packed))), f"seed={seed}"
    assert np.array_equal(got.astype(np.float64), decode_canonical(packed)), f"seed={seed}"
    bf16 = np.asarray(dequantize(tiled, jnp.bfloat16).astype(jnp.float32))
    assert np.array_equal(bf16, got), "HiF4 values are exact in bfloat16"


def test_word_and_scale_placement_follow_the_docstring():
    """Nibble p of word (64c + r, n) is the code of W[512c + 64p + r, n]; scale word (g, n) is the
    group's 4 canonical scale bytes, big-endian."""
    rng, seed = fresh_rng()
    packed = random_packed(rng, 1024, 128)
    tiled = to_tiled(packed)
    codes = np.asarray(packed.codes)  # [N, G, 32], two codes per byte, high nibble first
    nibbles = np.stack([codes >> 4, codes & 0xF], -1).reshape(128, 1024)  # [n, k]
    words = np.asarray(tiled.codes).astype(np.int64)
    for c, p, r, n in [(0, 0, 0, 0), (1, 7, 63, 127), (0, 3, 17, 5), (1, 5, 40, 99)]:
        got = (words[64 * c + r, n] >> (4 * p)) & 0xF
        assert got == nibbles[n, 512 * c + 64 * p + r], f"seed={seed}"
    scales = np.asarray(packed.scales).astype(np.int64)  # [N, G, 4]
    want = scales[..., 0] << 24 | scales[..., 1] << 16 | scales[..., 2] << 8 | scales[..., 3]
    assert np.array_equal(np.asarray(tiled.scales).astype(np.int64), want.T)


def test_bad_inputs_raise_value_errors():
    w = jnp.ones((128, 64), jnp.float32)
    with pytest.raises(ValueError, match="axis=0"):
        to_tiled(pack(w, "hif4", axis=1))
    with pytest.raises(ValueError, match="PackedWeight"):
        to_tiled(w)
    nan_group = pack(w, "hif4", axis=0)
    nan_group = PackedWeight(nan_group.codes, nan_group.scales.at[0, 0, 0].set(0xFF),
                             nan_group.shape, 0)
    with pytest.raises(ValueError, match="NaN scale"):
        to_tiled(nan_group)
    good = to_tiled(pack(w, "hif4", axis=0))
    with pytest.raises(ValueError, match="TiledWeight.codes"):
        to_canonical(TiledWeight(good.codes[:-1], good.scales, good.shape))
    assert jax.eval_shape(lambda: good).codes.shape == abstract_tiled((128, 64)).codes.shape


def test_canonical_weights_are_tiled_once_and_forgotten_with_them():
    rng, _ = fresh_rng()
    packed = random_packed(rng, 512, 128)
    first = as_tiled(packed)
    assert as_tiled(packed) is first
    key = (id(packed.codes), id(packed.scales))
    assert key in _tiled_cache
    del packed, first
    gc.collect()
    assert key not in _tiled_cache
