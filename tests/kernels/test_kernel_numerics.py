"""Acceptance 1: every kernel, in interpret mode on the CPU, against a float64 numpy reference of
dequantize-and-matmul (fresh random weights per run; the seed is in every failure message).

The default suite covers every (M, K) and (M, N) pair of M in {1, 7, 300, 700}, K in {512, 1024},
N in {128, 256, 512} once per backend; the full product is marked slow. With the default
thresholds, TPU runs the streaming kernel for M <= 256 and the cached-panel kernel above (700
rows: two M tiles reuse one panel); GPU runs the fused Triton kernel for M <= 64 and
dequantize-then-matmul above. The other variant of each is forced in `test_forced_variants`.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from kernel_refs import assert_within, fresh_rng, matmul_reference, random_packed

from kernels_pallas import BlockSizes, hif4_matmul, to_tiled

MS, KS, NS = (1, 7, 300, 700), (512, 1024), (128, 256, 512)
COVERING = [(m, KS[(i + j) % 2], n) for i, m in enumerate(MS) for j, n in enumerate(NS)]
FULL = [c for c in itertools.product(MS, KS, NS) if c not in COVERING]


def _check(backend: str, m: int, k: int, n: int, *, dtype=jnp.bfloat16, blocks=None,
           tiled: bool = False) -> None:
    rng, seed = fresh_rng()
    packed = random_packed(rng, k, n)
    x = jnp.asarray(rng.standard_normal((m, k)), dtype)
    ref, bound = matmul_reference(np.asarray(x.astype(jnp.float32)), packed)
    w = to_tiled(packed) if tiled else packed
    y = hif4_matmul(x, w, backend=backend, interpret=backend != "reference", block_sizes=blocks)
    assert y.dtype == jnp.float32
    assert_within(y, ref, bound, f"{backend} M={m} K={k} N={n} {dtype.__name__} seed={seed}")


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
@pytest.mark.parametrize(("m", "k", "n"), COVERING)
def test_kernel_matches_float64_reference(backend, m, k, n):
    _check(backend, m, k, n)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tpu", "gpu"])
@pytest.mark.parametrize(("m", "k", "n"), FULL)
def test_kernel_matches_float64_reference_full_grid(backend, m, k, n):
    _check(backend, m, k, n)


@pytest.mark.parametrize(
    ("backend", "m", "small_m"),
    [("tpu", 7, 0), ("tpu", 300, 512), ("gpu", 300, 1024), ("gpu", 700, 1024)],
    ids=["tpu-panel-M7", "tpu-stream-M300", "gpu-fused-M300", "gpu-fused-M700"],
)
def test_forced_variants(backend, m, small_m):
    _check(backend, m, 1024, 256, blocks=BlockSizes(small_m=small_m), tiled=True)


@pytest.mark.parametrize("backend", ["tpu", "gpu", "reference"])
def test_float32_activations_and_unaligned_shapes(backend):
    """float32 x multiplies at full precision; K = 200 and N = 72 are padded (K to 512, N to 128)
    and cut back; leading batch dims are kept."""
    rng, seed = fresh_rng()
    packed = random_packed(rng, 200, 72)
    x = rng.standard_normal((2, 5, 200)).astype(np.float32)
    ref, bound = matmul_reference(x.reshape(10, 200), packed)
    y = hif4_matmul(jnp.asarray(x), packed, backend=backend, interpret=backend != "reference")
    assert y.shape == (2, 5, 72)
    assert_within(y.reshape(10, 72), ref, bound, f"{backend} float32 seed={seed}")


def test_smaller_tiles_and_multi_chunk_k():
    """block_k = 512 over K = 1024 (two accumulation steps) and block_n = 128 over N = 256."""
    _check("tpu", 7, 1024, 256, blocks=BlockSizes(block_k=512, block_n=128), tiled=True)
    _check("tpu", 300, 1024, 256, blocks=BlockSizes(block_m=128, block_k=512, block_n=128))
