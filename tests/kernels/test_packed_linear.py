"""`PackedLinear` reproduces `QuantLinear` (W4A4 and W4A16, with smoothing) up to summation order,
on the reference path and on both kernels in interpret mode; errors for what cannot be packed."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from kernel_refs import fresh_rng

from kernels_pallas import hif4_matmul
from wanjax.models.layers import Linear
from wanjax.quant import QuantConfig, QuantLinear, fake_quant, pack, unpack
from wanjax.quant.packed_linear import PackedLinear

K, N = 1024, 256


def _quant_linear(rng, config, dtype, smoothing=True) -> QuantLinear:
    layer = QuantLinear(K, N, param_dtype=dtype, compute_dtype=dtype, config=config,
                        rngs=nnx.Rngs(int(rng.integers(2**31))))
    layer.bias[...] = jnp.asarray(rng.standard_normal(N), dtype)
    if smoothing:
        layer.set_smoothing(np.exp(rng.uniform(-1, 1, K)).astype(np.float32))
    return layer


def _float64_reference(layer: QuantLinear, x: np.ndarray):
    """`Q(x / s) @ Q(W * s) + b` in float64, and the float32-summation bound, from the spec's
    fake quantization (the operands both paths should see)."""
    s = np.asarray(layer.smoothing[...], np.float32)
    act = (x.astype(np.float32) / s).astype(np.float32)
    if layer.config.act_fmt:
        act = np.asarray(fake_quant(jnp.asarray(act), "hif4", -1))
    w = np.asarray(layer.kernel[...], np.float32) * s[:, None]
    w = np.asarray(fake_quant(jnp.asarray(w), "hif4", 0), np.float64)
    act = np.asarray(jnp.asarray(act).astype(layer.compute_dtype).astype(jnp.float32), np.float64)
    ref = act @ w + np.asarray(layer.bias[...], np.float64)
    return ref, (K + 2) * 2.0**-24 * (np.abs(act) @ np.abs(w))


@pytest.mark.parametrize(
    ("backend", "act_fmt", "dtype"),
    [("reference", "hif4", jnp.float32), ("tpu", "hif4", jnp.float32),
     ("gpu", "hif4", jnp.bfloat16), ("reference", None, jnp.float32),
     ("tpu", None, jnp.bfloat16)],
)
def test_packed_linear_matches_fake_quant(backend, act_fmt, dtype):
    rng, seed = fresh_rng()
    layer = _quant_linear(rng, QuantConfig(act_fmt=act_fmt), dtype)
    packed = PackedLinear.from_linear(layer, backend=backend, interpret=backend != "reference")
    x = jnp.asarray(rng.standard_normal((3, 33, K)), dtype)
    want, got = layer(x), packed(x)
    assert got.dtype == want.dtype == dtype and got.shape == (3, 33, N)
    ref, bound = _float64_reference(layer, np.asarray(x.astype(jnp.float32)).reshape(-1, K))
    rounding = 0.0 if dtype == jnp.float32 else 2.0**-8 * np.abs(ref)  # one bf16 rounding
    for name, y in (("QuantLinear", want), ("PackedLinear", got)):
        err = np.abs(np.asarray(y.astype(jnp.float32)).reshape(-1, N) - ref)
        assert np.all(err <= bound + rounding + 1e-6), f"{name} {backend} seed={seed}"


def test_already_quantized_weights_are_packed_exactly():
    """After `quantize_weights_` the kernel holds Q(W * s): it is re-encoded, not re-quantized."""
    rng, seed = fresh_rng()
    layer = _quant_linear(rng, QuantConfig(), jnp.float32)
    layer.quantize_weights_()
    packed = PackedLinear.from_linear(layer, backend="reference")
    x = jnp.asarray(rng.standard_normal((16, K)), jnp.float32)
    np.testing.assert_allclose(packed(x), layer(x), rtol=1e-6, atol=1e-5, err_msg=f"seed={seed}")
    assert np.array_equal(np.asarray(unpack(packed.canonical_weight())), layer.kernel[...])


def test_plain_linear_with_rule_config():
    rng, _ = fresh_rng()
    linear = Linear(K, N, rngs=nnx.Rngs(0))
    packed = PackedLinear.from_linear(linear, QuantConfig(act_fmt=None), backend="reference")
    x = jnp.asarray(rng.standard_normal((4, K)), jnp.float32)
    w = pack(linear.kernel[...], "hif4", axis=0)
    np.testing.assert_allclose(packed(x), hif4_matmul(x, w, backend="reference"), rtol=1e-6)
    assert packed.act_fmt is None and packed.smoothing is None


def test_what_cannot_be_packed_raises():
    rng, _ = fresh_rng()
    with pytest.raises(ValueError, match="only enabled HiF4-weight"):
        PackedLinear.from_linear(_quant_linear(rng, QuantConfig(weight_fmt="nvfp4"), jnp.float32))
    with pytest.raises(ValueError, match="only enabled HiF4-weight"):
        PackedLinear.from_linear(_quant_linear(rng, QuantConfig(enabled=False), jnp.float32))
    with pytest.raises(ValueError, match="its own config"):
        PackedLinear.from_linear(_quant_linear(rng, QuantConfig(), jnp.float32), QuantConfig())
    with pytest.raises(ValueError, match="unknown backend"):
        PackedLinear(8, 8, backend="cuda")


def test_hif4_matmul_input_errors():
    w = pack(jnp.ones((512, 128), jnp.float32), "hif4", axis=0)
    x = jnp.ones((4, 512), jnp.bfloat16)
    with pytest.raises(ValueError, match="unknown backend"):
        hif4_matmul(x, w, backend="triton")
    with pytest.raises(ValueError, match="interpret=True needs"):
        hif4_matmul(x, w, interpret=True)
    with pytest.raises(ValueError, match="bfloat16 or float32"):
        hif4_matmul(x.astype(jnp.float16), w)
    with pytest.raises(ValueError, match="does not match"):
        hif4_matmul(jnp.ones((4, 256), jnp.bfloat16), w)
    assert hif4_matmul(jnp.ones((0, 512), jnp.bfloat16), w).shape == (0, 128)
