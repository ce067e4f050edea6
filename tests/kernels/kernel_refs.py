"""Test helpers: fresh random HiF4 weights and a float64 numpy dequantize-and-matmul reference.

The decoder is written from `shared/docs/hif4_format.md` ("Canonical packed bytes") with numpy
bit operations on the canonical bytes; it shares no code with `wanjax.quant` or `kernels_pallas`.
"""

from __future__ import annotations

import numpy as np

from kernels_pallas.reference import summation_error_bound
from wanjax.quant import PackedWeight, pack


def fresh_rng() -> tuple[np.random.Generator, int]:
    """A generator with a new seed every run (reported in assertion messages to reproduce)."""
    seed = int(np.random.SeedSequence().entropy % 2**32)
    return np.random.default_rng(seed), seed


def random_weight(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """A Flax kernel `[K, N]` whose groups span many scales, with an all-zero group and outliers
    (so E6M2 exponents, per-8 and per-4 bits all vary)."""
    w = rng.standard_normal((k, n)) * np.exp2(rng.integers(-12, 12, size=(k // 64 + 1, n)))[
        np.arange(k) // 64
    ]
    w[:64, 0] = 0.0
    w[rng.integers(0, k, 8), rng.integers(0, n, 8)] *= 1000.0
    return w.astype(np.float32)


def random_packed(rng: np.random.Generator, k: int, n: int) -> PackedWeight:
    return pack(random_weight(rng, k, n), "hif4", axis=0)


def decode_canonical(packed: PackedWeight) -> np.ndarray:
    """float64 `W[K, N]` from the canonical bytes of `pack(W, 'hif4', axis=0)` (spec decoding)."""
    codes = np.asarray(packed.codes).astype(np.int64)  # [N, G, 32]
    scales = np.asarray(packed.scales).astype(np.int64)  # [N, G, 4]
    nibbles = np.stack([codes >> 4, codes & 0xF], axis=-1).reshape(*codes.shape[:2], 64)
    e6m2 = scales[..., 0]
    scale = (1 + (e6m2 & 3) / 4) * np.exp2((e6m2 >> 2) - 48.0)
    scale = np.where(e6m2 == 0xFF, np.nan, scale)
    i = np.arange(64)
    sub8 = (scales[..., 1:2] >> (7 - i // 8)) & 1
    sub4_word = (scales[..., 2:3] << 8) | scales[..., 3:4]
    sub4 = (sub4_word >> (15 - i // 4)) & 1
    sign = np.where(nibbles >> 3, -1.0, 1.0)
    values = sign * (nibbles & 7) / 4 * np.exp2(sub8 + sub4) * scale[..., None]
    k = packed.shape[0]
    return values.reshape(codes.shape[0], -1)[:, :k].T


def matmul_reference(x: np.ndarray, packed: PackedWeight) -> tuple[np.ndarray, np.ndarray]:
    """`x @ dequant(W)` in float64, and the rigorous float32-summation error bound
    `(K + 2) * 2^-24 * (|x| @ |W|)` (any order of K float32 additions of exact or once-rounded
    products stays within it)."""
    w = decode_canonical(packed)
    x64 = np.asarray(x, np.float64)
    bound = summation_error_bound(x64, w)
    return x64 @ w, bound


def assert_within(y, ref: np.ndarray, bound: np.ndarray, what: str) -> None:
    y = np.asarray(y, np.float64)
    assert y.shape == ref.shape, (y.shape, ref.shape)
    err = np.abs(y - ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound + 1e-30), (
        f"{what}: |error| {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"
    )
