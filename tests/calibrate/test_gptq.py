"""GPTQ on the 4-bit grids: RTN when nothing is fed back, lower output error when it is."""

import jax.numpy as jnp
import numpy as np
import pytest

from train.calibration.gptq import gptq_quantize, output_error
from wanjax.quant import fake_quant
from wanjax.quant.exact_pack import pack_exact
from wanjax.quant.packing import unpack

FORMATS = ("hif4", "nvfp4", "mxfp4", "int4")


def _layer(seed=0, k=192, n=40):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    mix = rng.standard_normal((k, k)) * 0.4 + np.eye(k)  # correlated inputs, like real activations
    x = (rng.standard_normal((2048, k)) @ mix).astype(np.float32)
    x[:, 5] *= 10.0
    return w, x


@pytest.mark.parametrize("fmt", FORMATS)
def test_identity_hessian_is_round_to_nearest(fmt):
    w, _ = _layer(1)
    q = gptq_quantize(w, np.eye(w.shape[0]), fmt, percdamp=0.0)
    np.testing.assert_array_equal(q, np.asarray(fake_quant(jnp.asarray(w), fmt, 0)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_gptq_reduces_output_error_vs_rtn(fmt):
    w, both = _layer(2)
    x, x_test = both[:1024], both[1024:]  # calibration and held-out tokens, same distribution
    rtn = np.asarray(fake_quant(jnp.asarray(w), fmt, 0))
    q = gptq_quantize(w, x.T.astype(np.float64) @ x, fmt)
    assert output_error(x, w, q) < 0.7 * output_error(x, w, rtn)
    assert output_error(x_test, w, q) < output_error(x_test, w, rtn)


def test_hif4_gptq_weights_are_on_the_grid():
    w, x = _layer(4, k=136, n=24)  # K not a multiple of 64: padded groups
    q = gptq_quantize(w, x.T.astype(np.float64) @ x, "hif4")
    assert q.shape == w.shape
    np.testing.assert_array_equal(np.asarray(unpack(pack_exact(q, axis=0))), q)
