"""Basic layers with the official Wan precision semantics.

Every matmul in the project goes through `Linear`, so that quantization (fake-quant, packed HiF4
kernels) can be swapped in at one seam. Norms compute in float32 and hand back the input dtype,
as the official `WanLayerNorm` / `WanRMSNorm` do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

DType = jnp.dtype | type
_XAVIER = nnx.initializers.xavier_uniform()


def dense(x: Array, kernel: Array, bias: Array | None, compute_dtype: DType) -> Array:
    """`x @ kernel + bias` in `compute_dtype` with float32 accumulation (torch autocast semantics)."""
    y = jax.lax.dot_general(
        x.astype(compute_dtype),
        kernel.astype(compute_dtype),
        (((x.ndim - 1,), (0,)), ((), ())),
        preferred_element_type=jnp.float32,
    )
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(compute_dtype)


class Linear(nnx.Module):
    """A dense layer with a Flax-layout kernel `[in, out]`.

    `compute_dtype` is the dtype the product runs in (bf16 under the official autocast, float32 for
    the precision islands); the kernel is stored in `param_dtype`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        param_dtype: DType = jnp.float32,
        compute_dtype: DType = jnp.float32,
        kernel_init=_XAVIER,
        rngs: nnx.Rngs,
    ):
        self.in_features = in_features
        self.out_features = out_features
        self.compute_dtype = compute_dtype
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        bias = None if self.bias is None else self.bias[...]
        return dense(x, self.kernel[...], bias, self.compute_dtype)


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis in float32; the result is cast back to the input dtype."""

    def __init__(self, dim: int, *, eps: float, affine: bool, param_dtype: DType, rngs: nnx.Rngs):
        del rngs
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype)) if affine else None
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype)) if affine else None

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        h = x.astype(jnp.float32)
        mean = jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
        h = (h - mean) * jax.lax.rsqrt(var + self.eps)
        if self.scale is not None:
            h = h * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return h.astype(x.dtype)


def rms_normalize(x: Float[Array, "... d"], eps: float) -> Float[Array, "... d"]:
    """`x * rsqrt(mean(x^2) + eps)` over the last axis, computed and returned in float32."""
    h = x.astype(jnp.float32)
    return h * jax.lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + eps)


class RMSNorm(nnx.Module):
    """`x * rsqrt(mean(x^2) + eps) * w`: normalised in float32, cast to the input dtype, then scaled."""

    def __init__(self, dim: int, *, eps: float, param_dtype: DType, rngs: nnx.Rngs):
        del rngs
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        h = rms_normalize(x, self.eps)
        return h.astype(x.dtype) * self.scale[...].astype(x.dtype)
