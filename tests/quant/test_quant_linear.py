"""Acceptance 4: the quantization-aware linear (STE gradients, training, modes, drop-in fit)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hif4_numpy_ref import hif4_fake_quant

from wanjax.models.layers import Linear, dense
from wanjax.quant import QuantConfig, QuantLinear, quantized_dense

F32 = jnp.float32


def _normal(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, F32)


@pytest.fixture(scope="module")
def operands():
    return _normal(0, (6, 128)), _normal(1, (128, 32), 0.1), _normal(2, (32,)), _normal(3, (6, 32))


def test_forward_is_the_plain_linear_at_the_quantized_operands(operands):
    x, w, b, _ = operands
    got = quantized_dense(x, w, b, F32, QuantConfig())
    xq = jnp.asarray(hif4_fake_quant(np.asarray(x), axis=-1))
    wq = jnp.asarray(hif4_fake_quant(np.asarray(w), axis=0))  # grouped along in_features
    assert np.array_equal(np.asarray(got), np.asarray(dense(xq, wq, b, F32)))


def test_ste_gradients_equal_plain_gradients_at_quantized_operands(operands):
    x, w, b, cot = operands

    def quantized_loss(x, w, b):
        return jnp.sum(quantized_dense(x, w, b, F32, QuantConfig()) * cot)

    def plain_loss(x, w, b):
        return jnp.sum(dense(x, w, b, F32) * cot)

    xq = jnp.asarray(hif4_fake_quant(np.asarray(x), axis=-1))
    wq = jnp.asarray(hif4_fake_quant(np.asarray(w), axis=0))
    got = jax.grad(quantized_loss, argnums=(0, 1, 2))(x, w, b)
    want = jax.grad(plain_loss, argnums=(0, 1, 2))(xq, wq, b)
    for g, h in zip(got, want, strict=True):
        assert np.array_equal(np.asarray(g), np.asarray(h))


def test_smoothing_divides_activations_and_multiplies_weight_rows(operands):
    x, w, b, cot = operands
    s = jnp.asarray(np.random.default_rng(4).uniform(0.5, 2.0, 128), F32)
    got = quantized_dense(x, w, b, F32, QuantConfig(), smoothing=s)
    xs = hif4_fake_quant(np.asarray(x) / np.asarray(s), axis=-1)
    ws = hif4_fake_quant(np.asarray(w) * np.asarray(s)[:, None], axis=0)
    assert np.array_equal(
        np.asarray(got), np.asarray(dense(jnp.asarray(xs), jnp.asarray(ws), b, F32))
    )
    grad_x = jax.grad(lambda x: jnp.sum(quantized_dense(x, w, b, F32, QuantConfig(), s) * cot))(x)
    np.testing.assert_allclose(grad_x, (cot @ ws.T) / np.asarray(s), rtol=1e-5, atol=1e-6)


def test_drop_in_for_linear_sharing_params_and_paths():
    lin = Linear(128, 32, rngs=nnx.Rngs(0))
    q = QuantLinear.from_linear(lin)
    assert isinstance(q, Linear) and q.kernel is lin.kernel and q.bias is lin.bias
    assert {p for p, _ in nnx.to_flat_state(nnx.state(q, nnx.Param))} == {("kernel",), ("bias",)}
    fresh = QuantLinear(128, 32, use_bias=False, rngs=nnx.Rngs(0), config=QuantConfig("nvfp4"))
    assert fresh.bias is None and fresh.kernel.shape == (128, 32)
    x = _normal(5, (2, 3, 128))
    assert fresh(x).shape == (2, 3, 32)

    q.enabled = False
    assert np.array_equal(np.asarray(q(x)), np.asarray(lin(x)))
    q.enabled = True
    assert not np.array_equal(np.asarray(q(x)), np.asarray(lin(x)))


def test_weights_quantized_mode_skips_requantization():
    s = jnp.asarray(np.random.default_rng(6).uniform(0.5, 2.0, 128), F32)
    layer = QuantLinear(128, 32, rngs=nnx.Rngs(1), smoothing=s)
    x = _normal(7, (4, 128))
    before = np.asarray(layer(x))
    raw = np.asarray(layer.kernel[...])
    layer.quantize_weights_()
    assert layer.config.weights_quantized
    want_kernel = hif4_fake_quant(raw * np.asarray(s)[:, None], axis=0)
    assert np.array_equal(np.asarray(layer.kernel[...]), want_kernel)
    assert np.array_equal(np.asarray(layer(x)), before)  # same product, weight quantized once
    with pytest.raises(ValueError, match="already quantized"):
        layer.quantize_weights_()
    with pytest.raises(ValueError, match="after the weights were quantized"):
        layer.set_smoothing(s)


def test_bf16_compute_and_per_operand_formats():
    layer = QuantLinear(
        128, 16, compute_dtype=jnp.bfloat16, rngs=nnx.Rngs(2), config=QuantConfig(act_fmt=None)
    )
    x = _normal(8, (3, 128)).astype(jnp.bfloat16)
    wq = jnp.asarray(hif4_fake_quant(np.asarray(layer.kernel[...]), axis=0))
    got = layer(x)
    assert got.dtype == jnp.bfloat16
    assert np.array_equal(np.asarray(got), np.asarray(dense(x, wq, layer.bias[...], jnp.bfloat16)))


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown format 'hif5'"):
        QuantConfig(weight_fmt="hif5")
    with pytest.raises(ValueError, match=r"smoothing must have shape \(128,\)"):
        QuantLinear(128, 8, rngs=nnx.Rngs(0), smoothing=jnp.ones(64))
    with pytest.raises(ValueError, match=r"activation \(2, 64\) does not match kernel"):
        quantized_dense(jnp.ones((2, 64)), jnp.ones((128, 8)), None, F32, QuantConfig())


def test_tiny_regression_trains_through_the_ste():
    """Fit y = x @ W* with a W4A4 HiF4 layer; the loss falls to the quantization-noise floor."""
    x = _normal(9, (256, 64))
    target = _normal(10, (64, 8), 0.2)
    y = x @ target
    model = QuantLinear(64, 8, use_bias=False, rngs=nnx.Rngs(3))
    optimizer = nnx.Optimizer(model, optax.adam(2e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(150)]
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    rel_weight_err = jnp.linalg.norm(model.kernel[...] - target) / jnp.linalg.norm(target)
    assert rel_weight_err < 0.2
