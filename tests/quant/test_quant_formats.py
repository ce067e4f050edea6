"""Acceptance 3 (relative RMSE on 1M normals) and the shared format API: errors, dtypes, NaN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wanjax.quant import FORMATS, fake_quant, fake_quant_ste


@pytest.fixture(scope="module")
def normal_1m() -> jax.Array:
    return jnp.asarray(np.random.default_rng(0).standard_normal((1024, 1024)), jnp.float32)


def _rel_rmse(fmt: str, x: jax.Array) -> float:
    err = np.asarray(fake_quant(x, fmt), np.float64) - np.asarray(x, np.float64)
    return float(np.linalg.norm(err) / np.linalg.norm(np.asarray(x, np.float64)))


def test_relative_rmse_on_a_million_normals(normal_1m):
    rmse = {fmt: _rel_rmse(fmt, normal_1m) for fmt in FORMATS}
    print("relative RMSE, N(0,1), 1024x1024:", {k: round(v, 5) for k, v in rmse.items()})
    assert abs(rmse["hif4"] - 0.083) <= 0.002
    assert rmse["hif4"] < rmse["nvfp4"] and rmse["hif4"] < rmse["mxfp4"]


def test_int4_is_symmetric_per_group_absmax():
    x = np.random.default_rng(1).standard_normal((3, 128)).astype(np.float32)
    groups = x.reshape(3, 2, 64)
    scale = np.abs(groups).max(-1, keepdims=True) / np.float32(7)
    want = (np.clip(np.round(groups / scale), -7, 7) * scale).reshape(3, 128)
    assert np.array_equal(np.asarray(fake_quant(jnp.asarray(x), "int4")), want)
    assert np.array_equal(np.asarray(fake_quant(jnp.zeros((2, 64)), "int4")), np.zeros((2, 64)))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_any_axis_and_leading_shape(fmt):
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 100, 3)), jnp.float32)
    moved = np.asarray(fake_quant(jnp.moveaxis(x, 1, -1), fmt, -1))
    assert np.array_equal(np.asarray(fake_quant(x, fmt, 1)), np.moveaxis(moved, -1, 1))
    batched = jax.vmap(lambda v: fake_quant(v, fmt, 0))(x)
    assert np.array_equal(np.asarray(batched), np.asarray(fake_quant(x, fmt, 1)))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_nonfinite_activations_poison_only_their_group(fmt):
    group = FORMATS[fmt].group_size
    x = np.ones((2, 2 * group), np.float32)
    x[0, 1], x[1, group + 1] = np.nan, -np.inf
    got = np.asarray(fake_quant(jnp.asarray(x), fmt))
    assert np.isnan(got[0, :group]).all() and np.isfinite(got[0, group:]).all()
    assert np.isnan(got[1, group:]).all() and np.isfinite(got[1, :group]).all()


def test_clear_errors():
    x = jnp.ones((4, 64))
    with pytest.raises(ValueError, match=r"unknown format 'fp4'; valid formats: \['hif4', 'int4'"):
        fake_quant(x, "fp4")
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        fake_quant(x, "hif4", axis=2)
    with pytest.raises(ValueError, match="floating"):
        fake_quant(jnp.ones((4, 64), jnp.int8))


def test_ste_is_exact_forward_and_identity_backward():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((4, 64)), jnp.float32)
    assert np.array_equal(np.asarray(fake_quant_ste(x, "hif4", -1)), np.asarray(fake_quant(x)))
    cot = jnp.asarray(np.random.default_rng(4).standard_normal((4, 64)), jnp.float32)
    grad = jax.grad(lambda v: jnp.sum(fake_quant_ste(v, "hif4", -1) * cot))(x)
    assert np.array_equal(np.asarray(grad), np.asarray(cot))
