"""SmoothQuant-style per-input-channel smoothing for W4A4, with the exponent searched per layer.

`s_j = amax_x,j^alpha / amax_w,j^(1 - alpha)` (normalised to geometric mean 1); the layer then
computes `Q(x / s) @ Q(s * W)`, the same product without quantization. `alpha` is chosen per
layer from `ALPHAS` by the W4A4 output error on recorded calibration tokens; alpha = 0 with
s = 1 (no smoothing) is always a candidate, so smoothing never loses on those tokens.

Where the division by s can be folded into the producer of the layer's input exactly, it is
(`FOLDABLE`): attention `o` (attention is linear in V, so 1/s moves onto the `v` projection's
output columns and bias) and cross-attention `q` (its input is the affine `cross_norm`, whose
scale and bias take 1/s). Elsewhere (q/k/v and `ffn.fc1` after the modulated, affine-free norms,
cross k/v on the shared text context, `ffn.fc2` after GELU) the layer keeps an explicit
per-channel multiply (`QuantLinear.smoothing`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from wanjax.quant import formats

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.75)
_MIN_SCALE, _MAX_SCALE = 1e-4, 1e4

# layer name within a block -> what takes 1/s instead of the activation
FOLDABLE = {
    "self_attn.o": "self_attn.v",
    "cross_attn.o": "cross_attn.v",
    "cross_attn.q": "cross_norm",
}


def smoothing_scales(act_absmax: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """Per-input-channel factors for a kernel `[in, out]`; channels with no signal get 1."""
    a = np.asarray(act_absmax, np.float64)
    w = np.max(np.abs(np.asarray(weight, np.float64)), axis=1)
    ok = (a > 0) & (w > 0)
    s = np.ones_like(a)
    s[ok] = a[ok] ** alpha / w[ok] ** (1.0 - alpha)
    if ok.any():
        s[ok] /= np.exp(np.mean(np.log(s[ok])))  # geometric mean 1: keeps magnitudes as they were
    return np.clip(s, _MIN_SCALE, _MAX_SCALE).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("fmt",))
def w4a4_error(x, weight, scales, fmt: str):
    """`||Q(x/s) Q(s W) - x W|| / ||x W||` in float32 (bias excluded: it is not quantized)."""
    ref = jnp.matmul(x, weight, precision=jax.lax.Precision.HIGHEST)
    act = formats.fake_quant(x / scales, fmt, -1)
    w = formats.fake_quant(weight * scales[:, None], fmt, 0)
    out = jnp.matmul(act, w, precision=jax.lax.Precision.HIGHEST)
    return jnp.linalg.norm(out - ref) / jnp.maximum(jnp.linalg.norm(ref), 1e-30)


@dataclasses.dataclass(frozen=True)
class SmoothChoice:
    alpha: float  # 0.0: no smoothing
    scales: np.ndarray | None
    errors: dict[float, float]  # candidate alpha -> W4A4 output error


def search_alpha(
    x: np.ndarray, weight: np.ndarray, act_absmax: np.ndarray, fmt: str,
    alphas=ALPHAS,
) -> SmoothChoice:
    """The alpha (or none) with the lowest W4A4 output error on the tokens `x [n, in]`."""
    x = jnp.asarray(x, jnp.float32)
    weight32 = jnp.asarray(weight, jnp.float32)
    ones = np.ones((weight.shape[0],), np.float32)
    errors = {0.0: float(w4a4_error(x, weight32, jnp.asarray(ones), fmt))}
    cands = {0.0: None}
    for alpha in alphas:
        s = smoothing_scales(act_absmax, weight, alpha)
        errors[float(alpha)] = float(w4a4_error(x, weight32, jnp.asarray(s), fmt))
        cands[float(alpha)] = s
    best = min(errors, key=lambda a: (errors[a], a))
    return SmoothChoice(best, cands[best], errors)


def fold_into_producer(block, layer: str, scales: np.ndarray) -> None:
    """Move `1/s` of `block.<layer>`'s input into its producer and `s` into its kernel rows
    (in place, full precision; the unquantized block computes the same function)."""
    if layer not in FOLDABLE:
        raise ValueError(f"{layer} has no exact fold; keep an explicit smoothing vector")
    s = jnp.asarray(scales, jnp.float32)
    target = _get(block, layer)
    producer = _get(block, FOLDABLE[layer])
    if getattr(getattr(producer, "config", None), "weights_quantized", False):
        raise ValueError(f"cannot fold into {FOLDABLE[layer]}: its weights are already quantized")
    _scale(target.kernel, s[:, None])
    if FOLDABLE[layer] == "cross_norm":
        if producer.scale is None:
            raise ValueError("cross_norm has no affine parameters to fold into")
        _scale(producer.scale, 1.0 / s)
        _scale(producer.bias, 1.0 / s)
    else:
        _scale(producer.kernel, 1.0 / s[None, :])
        if producer.bias is not None:
            _scale(producer.bias, 1.0 / s)


def _scale(var, factor) -> None:
    var[...] = (var[...].astype(jnp.float32) * factor).astype(var.dtype)


def _get(block, dotted: str):
    node = block
    for part in dotted.split("."):
        node = getattr(node, part)
    return node
