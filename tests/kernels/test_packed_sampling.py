"""Acceptance 3: a tiny DiT with every block linear packed, sampled through the Pallas kernels in
interpret mode, equals the fake-quant model (W4A4 HiF4, same smoothing) to bf16 tolerance.

bf16 parameters and compute, like the official run. Self-attention projections see M = 2 * 192
tokens (batched CFG), more than the TPU streaming threshold, so the cached-panel kernel runs;
cross-attention k/v see M = 16 (streaming). On the GPU path M = 16 runs the fused Triton kernel and
M = 384 dequantize-then-matmul. The FFN has K = 640 (two 512-row chunks after padding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wanjax.config import DiTConfig, Precision
from wanjax.models.dit import WanDiT
from wanjax.quant import QuantRule, apply_quantization
from wanjax.quant.packed_linear import PackedLinear
from wanjax.quant.packed_model import pack_model
from wanjax.sampling.loop import SampleConfig, dit_apply, make_sampler

CFG = DiTConfig(dim=64, ffn_dim=640, num_heads=4, num_layers=2, in_dim=4, out_dim=4,
                text_dim=32, freq_dim=32, text_len=8)
BF16 = Precision(jnp.bfloat16, jnp.bfloat16)
SAMPLING = SampleConfig(num_steps=2, shift=5.0, boundary=0.5)  # one step per expert


def _student(seed: int) -> WanDiT:
    model = WanDiT(CFG, BF16, rngs=nnx.Rngs(seed))
    head = model.head.proj.kernel  # zero-initialised: give it weights so the output depends on all
    head[...] = (0.05 * jax.random.normal(jax.random.key(seed + 7), head.shape)).astype(head.dtype)
    apply_quantization(model, QuantRule(include=("blocks.*",)))  # W4A4 HiF4
    rng = np.random.default_rng(seed)
    for block in model.blocks:
        block.ffn.fc1.set_smoothing(np.exp(rng.uniform(-1, 1, CFG.dim)).astype(np.float32))
    return model


def _sample(high: WanDiT, low: WanDiT) -> np.ndarray:
    graph_high, state_high = nnx.split(high)
    graph_low, state_low = nnx.split(low)
    sample = make_sampler(dit_apply(graph_high), dit_apply(graph_low), SAMPLING)
    rng = np.random.default_rng(0)
    noise = jnp.asarray(rng.standard_normal((1, 4, 3, 16, 16)), jnp.float32)
    context = jnp.asarray(rng.standard_normal((1, 8, CFG.text_dim)), jnp.float32)
    negative = jnp.asarray(rng.standard_normal((1, 5, CFG.text_dim)), jnp.float32)
    out = sample(state_high, state_low, noise, context, negative, jax.random.key(0))
    return np.asarray(out)


@pytest.fixture(scope="module")
def fake_quant_output():
    return _sample(_student(0), _student(1))


@pytest.mark.parametrize(
    "backend", ["tpu", pytest.param("gpu", marks=pytest.mark.slow)]
)
def test_packed_dit_samples_like_the_fake_quant_model(fake_quant_output, backend):
    high, low = _student(0), _student(1)
    for model in (high, low):
        report = pack_model(model, backend=backend, interpret=True)
        assert len(report.packed) == CFG.num_layers * 10  # every block linear
        assert all(isinstance(b.ffn.fc1, PackedLinear) for b in model.blocks)
    got = _sample(high, low)
    want = fake_quant_output
    assert np.all(np.isfinite(got))
    err = np.abs(got - want)
    scale = np.abs(want).max()
    assert err.max() <= 2.0**-7 * scale, f"max |diff| {err.max():.3g} vs output scale {scale:.3g}"
