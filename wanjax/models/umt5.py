"""The umT5-XXL text encoder (official Wan `T5Encoder`, HF `UMT5EncoderModel`) in Flax NNX.

Data path: token ids `[B, L]` -> embedding -> 24 pre-norm blocks (self-attention with a per-layer
relative position bias, gated-GELU FFN) -> final T5 norm -> hidden `[B, L, d_model]` (float32).
Spec: shared/docs/wan22_spec.md section 4 and gotcha 14.

T5 details that differ from the DiT: attention logits are **not** scaled by 1/sqrt(d_kv); every
layer owns its own relative-position table (umT5, unlike T5, shares nothing); the norm is RMS
without mean or bias, variance in float32, result cast to the weight dtype before scaling.

Precision. The official pipeline runs T5 with bf16 weights and no autocast: every matmul and the
residual stream are bf16, only the softmax and the norm's variance are float32. That is
`Precision.named("bf16")` here. Note that the official model runs the FFN output projection
`fc2` in bf16, while HF transformers keeps `wo` (the same weight) in float32 through
`_keep_in_fp32_modules`; bf16 embeddings from the two therefore differ slightly, and we follow the
official model. Parity tests run float32 end to end (`Precision()`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from wanjax.config import Precision
from wanjax.models.blocks import gelu_tanh
from wanjax.models.layers import DType, Linear, rms_normalize

_FP32 = Precision()


@dataclasses.dataclass(frozen=True)
class UMT5Config:
    """Architecture of the umT5 encoder. Defaults are umT5-XXL as used by Wan2.1/2.2."""

    vocab_size: int = 256384
    d_model: int = 4096
    num_heads: int = 64
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_heads", "d_kv", "d_ff", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UMT5Config.{name} must be a positive int, got {value!r}")
        if self.num_buckets < 4 or self.num_buckets % 2:
            raise ValueError(f"num_buckets must be even and >= 4, got {self.num_buckets}")
        if self.max_distance <= self.num_buckets // 4:
            raise ValueError(
                f"max_distance {self.max_distance} must exceed the exact-bucket range "
                f"num_buckets // 4 = {self.num_buckets // 4}"
            )
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")

    @property
    def inner_dim(self) -> int:
        """Width of q/k/v (`num_heads * d_kv`), 4096 for XXL; not necessarily `d_model`."""
        return self.num_heads * self.d_kv

    @property
    def param_count(self) -> int:
        """Number of parameters, computed from the config alone (5,680,910,336 for XXL)."""
        d, inner = self.d_model, self.inner_dim
        per_layer = 4 * d * inner + self.num_buckets * self.num_heads + 3 * d * self.d_ff + 2 * d
        return self.vocab_size * d + self.num_layers * per_layer + d


def umt5_config_to_json(cfg: UMT5Config) -> dict:
    return dataclasses.asdict(cfg)


def umt5_config_from_json(d: dict) -> UMT5Config:
    """Inverse of `umt5_config_to_json`; unknown fields are an error (a newer format)."""
    fields = {f.name for f in dataclasses.fields(UMT5Config)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"unknown UMT5Config fields {unknown}")
    return UMT5Config(**d)


def umt5_xxl() -> UMT5Config:
    """umT5-XXL, the Wan2.2 text encoder (`models_t5_umt5-xxl-enc-bf16.pth`)."""
    return UMT5Config()


def umt5_tiny() -> UMT5Config:
    """A tiny random-weights config for tests: q/k/v width (24) differs from d_model (32)."""
    return UMT5Config(vocab_size=100, d_model=32, num_heads=4, d_kv=6, d_ff=48, num_layers=2)


def relative_position_buckets(
    q_len: int, k_len: int, num_buckets: int, max_distance: int
) -> np.ndarray:
    """Bidirectional T5 buckets `[q_len, k_len]` (int32) of `rel = k_pos - q_pos`.

    Half of the buckets hold keys after the query (`rel > 0`). Within a half, distances below
    `num_buckets // 4` get their own bucket; larger ones share log-spaced buckets up to
    `max_distance`, beyond which everything falls into the last bucket of the half.
    Static in the sequence length, so it is built with numpy.
    """
    half = num_buckets // 2
    max_exact = half // 2
    rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
    dist = np.abs(rel)
    log_ratio = np.log(np.maximum(dist, 1) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (half - max_exact)).astype(np.int64)  # truncates (dist >= 8)
    large = np.minimum(large, half - 1)
    buckets = (rel > 0) * half + np.where(dist < max_exact, dist, large)
    return buckets.astype(np.int32)


class T5Norm(nnx.Module):
    """`w * (x * rsqrt(mean(x^2) + eps))`: variance in float32, cast to the weight dtype, then scaled.

    Unlike `layers.RMSNorm` (the DiT's q/k norm), the result takes the *weight's* dtype, as in the
    official `T5LayerNorm` (a float32 weight therefore yields float32, even for bf16 inputs).
    """

    def __init__(self, dim: int, *, eps: float, param_dtype: DType, rngs: nnx.Rngs):
        del rngs
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        h = rms_normalize(x, self.eps)
        scale = self.scale[...]
        return scale * h.astype(scale.dtype)


class SelfAttention(nnx.Module):
    """Unscaled multi-head self-attention with an additive bias and a key padding mask.

    Written out (not `wanjax.models.attention`): T5 needs scale 1, a per-head bias on the logits and
    a float32 softmax over compute-dtype logits, exactly like the official `T5Attention`.
    """

    def __init__(self, cfg: UMT5Config, prec: Precision, *, rngs: nnx.Rngs):
        kw = dict(
            use_bias=False, param_dtype=prec.param_dtype, compute_dtype=prec.compute_dtype,
            rngs=rngs,
        )
        self.num_heads = cfg.num_heads
        self.compute_dtype = prec.compute_dtype
        self.q = Linear(cfg.d_model, cfg.inner_dim, **kw)
        self.k = Linear(cfg.d_model, cfg.inner_dim, **kw)
        self.v = Linear(cfg.d_model, cfg.inner_dim, **kw)
        self.o = Linear(cfg.inner_dim, cfg.d_model, **kw)

    def _heads(self, x: Array) -> Array:
        return x.reshape(*x.shape[:-1], self.num_heads, -1)

    def __call__(
        self,
        x: Float[Array, "b l d"],
        bias: Float[Array, "n l l"],
        key_mask: Array,
    ) -> Float[Array, "b l d"]:
        cd = self.compute_dtype
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        logits = jnp.einsum("bqnc,bknc->bnqk", q, k, preferred_element_type=jnp.float32)
        logits = logits.astype(cd) + bias.astype(cd)[None]
        logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(cd).min)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(cd)
        out = jnp.einsum("bnqk,bknc->bqnc", probs, v, preferred_element_type=jnp.float32)
        return self.o(out.astype(cd).reshape(*out.shape[:-2], -1))


class GatedFeedForward(nnx.Module):
    """`fc2(fc1(x) * gelu_tanh(gate(x)))`; official `gate.0` is HF `wi_0`, `fc1` is `wi_1`."""

    def __init__(self, cfg: UMT5Config, prec: Precision, *, rngs: nnx.Rngs):
        kw = dict(
            use_bias=False, param_dtype=prec.param_dtype, compute_dtype=prec.compute_dtype,
            rngs=rngs,
        )
        self.gate = Linear(cfg.d_model, cfg.d_ff, **kw)
        self.fc1 = Linear(cfg.d_model, cfg.d_ff, **kw)
        self.fc2 = Linear(cfg.d_ff, cfg.d_model, **kw)

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        return self.fc2(self.fc1(x) * gelu_tanh(self.gate(x)))


class UMT5Block(nnx.Module):
    """Pre-norm block with its own relative position table `pos_embedding [num_buckets, heads]`."""

    def __init__(self, cfg: UMT5Config, prec: Precision, *, rngs: nnx.Rngs):
        pd = prec.param_dtype
        self.norm1 = T5Norm(cfg.d_model, eps=cfg.eps, param_dtype=pd, rngs=rngs)
        self.attn = SelfAttention(cfg, prec, rngs=rngs)
        self.norm2 = T5Norm(cfg.d_model, eps=cfg.eps, param_dtype=pd, rngs=rngs)
        self.ffn = GatedFeedForward(cfg, prec, rngs=rngs)
        self.pos_embedding = nnx.Embed(
            cfg.num_buckets, cfg.num_heads, param_dtype=pd,
            embedding_init=nnx.initializers.normal(1.0), rngs=rngs,
        )

    def position_bias(self, buckets: Int[Array, "l l"]) -> Float[Array, "n l l"]:
        return jnp.moveaxis(self.pos_embedding(buckets), -1, 0)

    def __call__(
        self, x: Float[Array, "b l d"], buckets: Int[Array, "l l"], key_mask: Array
    ) -> Float[Array, "b l d"]:
        dtype = x.dtype
        x = x + self.attn(self.norm1(x), self.position_bias(buckets), key_mask).astype(dtype)
        return x + self.ffn(self.norm2(x)).astype(dtype)


class UMT5Encoder(nnx.Module):
    """`encoder(ids [B, L] int, mask [B, L]) -> hidden [B, L, d_model]` (float32).

    Rows where `mask == 0` (padding) are masked as attention keys; their own outputs are
    meaningless and are replaced by zeros downstream (`wanjax.text.encode`). Inputs are assumed
    valid here; `wanjax.text.encode.TextEncoder` checks them.
    """

    def __init__(self, cfg: UMT5Config, prec: Precision = _FP32, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.compute_dtype = prec.compute_dtype
        self.token_embedding = nnx.Embed(
            cfg.vocab_size, cfg.d_model, param_dtype=prec.param_dtype,
            embedding_init=nnx.initializers.normal(1.0), rngs=rngs,
        )
        self.blocks = nnx.List([UMT5Block(cfg, prec, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = T5Norm(cfg.d_model, eps=cfg.eps, param_dtype=prec.param_dtype, rngs=rngs)

    def __call__(
        self, ids: Int[Array, "b l"], mask: Int[Array, "b l"]
    ) -> Float[Array, "b l d"]:
        cfg = self.cfg
        seq = ids.shape[1]
        buckets = jnp.asarray(
            relative_position_buckets(seq, seq, cfg.num_buckets, cfg.max_distance)
        )
        key_mask = jnp.asarray(mask) != 0
        x = self.token_embedding(ids).astype(self.compute_dtype)  # the residual stream's dtype
        for block in self.blocks:
            x = block(x, buckets, key_mask)
        return self.norm(x).astype(jnp.float32)
