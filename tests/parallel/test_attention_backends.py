"""The accelerator attention backends: numerics in interpret mode, lowering from this CPU machine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from wanjax.models.attention import attention, resolve_backend
from wanjax.models.attention_splash import splash_attention


def _qkv(lq=200, lk=150, heads=2, d=128, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal((2, n, heads, d)), jnp.float32) for n in (lq, lk, lk)]


def _softmax_reference(q, k, v, lengths):
    """float64 numpy: softmax(q k^T / sqrt(d)) v with keys >= length masked."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
    mask = np.arange(k.shape[1])[None, :] < np.asarray(lengths)[:, None]
    logits = np.where(mask[:, None, None, :], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknd->bqnd", p, v)


def test_splash_interpret_matches_reference():
    q, k, v = _qkv()
    lengths = jnp.array([150, 97])  # padded keys are masked; 200/150 are not multiples of 128
    out = splash_attention(q, k, v, lengths, interpret=True)
    np.testing.assert_allclose(out, _softmax_reference(q, k, v, lengths), atol=2e-5)


def test_xla_backend_matches_reference():
    q, k, v = _qkv(lq=33, lk=33, d=16)
    lengths = jnp.array([33, 20])
    np.testing.assert_allclose(attention(q, k, v, key_lengths=lengths, backend="xla"),
                               _softmax_reference(q, k, v, lengths), atol=2e-5)


def test_splash_exports_for_tpu_at_a14b_shape():
    s = jax.ShapeDtypeStruct((1, 75_600, 40, 128), jnp.bfloat16)
    lengths = jax.ShapeDtypeStruct((1,), jnp.int32)
    exp = export.export(jax.jit(lambda q, k, v, n: attention(q, k, v, key_lengths=n,
                                                             backend="splash")),
                        platforms=["tpu"])(s, s, s, lengths)
    assert "tpu_custom_call" in exp.mlir_module()


def test_cudnn_lowers_for_cuda(monkeypatch):
    """cuDNN flash attention lowers to its custom call. JAX asks the local GPU for the cuDNN
    version and compute capability while tracing; with no GPU here those two queries are stubbed
    (H100 answers: cuDNN 9.10, sm_90). Nothing else is faked: the lowering is real."""
    from jax._src.cudnn import fused_attention_stablehlo as fa

    monkeypatch.setattr(fa, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(fa, "check_compute_capability", lambda cap: True)
    s = jax.ShapeDtypeStruct((1, 32_760, 40, 128), jnp.bfloat16)
    lengths = jax.ShapeDtypeStruct((1,), jnp.int32)
    lowered = jax.jit(lambda q, k, v, n: attention(q, k, v, key_lengths=n, backend="cudnn")).trace(
        s, s, s, lengths).lower(lowering_platforms=("cuda",))
    assert "__cudnn$fmha" in lowered.as_text()


def test_auto_backend_on_cpu_is_xla():
    assert resolve_backend("auto", jnp.bfloat16) == "xla"
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend("flash", jnp.float32)
