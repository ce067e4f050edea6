"""Smoothing preserves the unquantized function exactly, and the search never loses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY, random_expert

from train.calibration import smoothing
from wanjax.quant.linear import QuantConfig
from wanjax.quant.rules import QuantRule, apply_quantization

OFF = QuantConfig(weight_fmt=None, act_fmt=None)  # smoothing only, no rounding


def _inputs():
    k = jax.random.split(jax.random.key(7), 2)
    x = jax.random.normal(k[0], (2, TINY.in_dim, 2, 4, 4))
    ctx = jax.random.normal(k[1], (2, 5, TINY.text_dim))
    return x, jnp.array([950.0, 400.0]), ctx


def _smooth_everything(model, scales_fn):
    """Fold where exact, explicit per-channel multiply elsewhere, on every block linear."""
    apply_quantization(model, QuantRule(include=("blocks.*",), config=OFF))
    for block in model.blocks:
        for name in smoothing.FOLDABLE:
            layer = smoothing._get(block, name)
            smoothing.fold_into_producer(block, name, scales_fn(layer.in_features))
        for name in ("self_attn.q", "self_attn.k", "self_attn.v", "cross_attn.k", "cross_attn.v",
                     "ffn.fc1", "ffn.fc2"):
            layer = smoothing._get(block, name)
            layer.set_smoothing(scales_fn(layer.in_features))


@pytest.mark.parametrize("kind", ["power_of_two", "generic"])
def test_smoothing_preserves_the_unquantized_function(kind):
    model = random_expert(11)
    x, t, ctx = _inputs()
    ref = np.asarray(model(x, t, ctx))
    rng = np.random.default_rng(0)
    if kind == "power_of_two":  # every rescaling is exact in float: bit-identical output
        scales_fn = lambda n: (2.0 ** rng.integers(-3, 4, n)).astype(np.float32)  # noqa: E731
    else:
        scales_fn = lambda n: rng.uniform(0.2, 5.0, n).astype(np.float32)  # noqa: E731
    smoothed = nnx.clone(model)
    _smooth_everything(smoothed, scales_fn)
    out = np.asarray(smoothed(x, t, ctx))
    if kind == "power_of_two":
        np.testing.assert_array_equal(out, ref)
    else:
        np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max())
    # the original model is untouched by the clone's folds
    np.testing.assert_array_equal(np.asarray(model(x, t, ctx)), ref)


def test_alpha_search_never_loses_and_helps_with_outlier_channels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 256)).astype(np.float32)
    x[:, rng.choice(256, 3, replace=False)] *= 30.0  # a few outlier channels, as in DiT activations
    w = (rng.standard_normal((256, 96)) * 0.05).astype(np.float32)
    choice = smoothing.search_alpha(x, w, np.abs(x).max(0), "hif4")
    assert choice.errors[choice.alpha] <= choice.errors[0.0]
    assert choice.alpha > 0 and choice.errors[choice.alpha] < 0.8 * choice.errors[0.0]
    np.testing.assert_allclose(np.exp(np.mean(np.log(choice.scales))), 1.0, rtol=1e-5)


def test_fold_refuses_non_foldable_layers():
    model = random_expert(2)
    with pytest.raises(ValueError, match="no exact fold"):
        smoothing.fold_into_producer(model.blocks[0], "ffn.fc2", np.ones(TINY.ffn_dim))
