"""Quantization-aware linear layer: W4A4 fake quantization along `in_features` with an STE.

The weight `[in, out]` is quantized along `in` (axis 0) and the activation `[..., in]` along its
last axis, so both are grouped along the reduction axis K, as the HiF4 reference `QLinear` does.
Gradients pass straight through the rounding (identity), so they equal the gradients of the plain
linear evaluated at the quantized operands.

Optional per-input-channel smoothing `s` (SmoothQuant-style) divides the activation and multiplies
the weight rows before quantization; the product is unchanged up to quantization error.

HiF4 is not idempotent, so a weight must be quantized exactly once: `QuantLinear.quantize_weights_`
stores `Q(W * s)` in the kernel and switches the layer to `weights_quantized` mode, where the
forward pass uses the kernel as is.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from wanjax.models.layers import DType, Linear, dense
from wanjax.quant import floatbits, formats

_XAVIER_UNIFORM = nnx.initializers.xavier_uniform()  # Linear's default kernel init


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """How one linear layer is fake-quantized.

    `weight_fmt` / `act_fmt`: a name from `FORMATS`, or None to keep that operand in full precision
    (W4A16 / W16A4 ablations). `enabled=False` makes the layer an ordinary `Linear`.
    `weights_quantized`: the kernel already holds `Q(W * s)`; do not quantize it again.
    """

    weight_fmt: str | None = "hif4"
    act_fmt: str | None = "hif4"
    enabled: bool = True
    weights_quantized: bool = False

    def __post_init__(self):
        for fmt in (self.weight_fmt, self.act_fmt):
            if fmt is not None:
                formats.get_format(fmt)


class SmoothingScale(nnx.Variable):
    """Per-input-channel smoothing factors `[in]` (not a trainable `nnx.Param`)."""


def quantized_dense(
    x: Float[Array, "... in"],
    kernel: Float[Array, "in out"],
    bias: Float[Array, " out"] | None,
    compute_dtype: DType,
    config: QuantConfig,
    smoothing: Float[Array, " in"] | None = None,
) -> Float[Array, "... out"]:
    """`dense` on fake-quantized operands: `Q(x / s) @ Q(W * s[:, None]) + b` with an STE.

    Quantization runs in float32; HiF4 values are exact in bf16, so the product in `compute_dtype`
    sees exactly the quantized operands.
    """
    if not config.enabled:
        return dense(x, kernel, bias, compute_dtype)
    if kernel.ndim != 2 or x.shape[-1] != kernel.shape[0]:
        raise ValueError(f"activation {x.shape} does not match kernel {kernel.shape} ([in, out])")
    if smoothing is not None and smoothing.shape != (kernel.shape[0],):
        raise ValueError(f"smoothing must have shape ({kernel.shape[0]},), got {smoothing.shape}")

    act = x.astype(jnp.float32)
    if smoothing is not None:
        act = floatbits.divide(act, smoothing.astype(jnp.float32))
    if config.act_fmt is not None:
        act = formats.fake_quant_ste(act, config.act_fmt, -1)

    weight = kernel
    if not config.weights_quantized:
        weight = kernel.astype(jnp.float32)
        if smoothing is not None:
            weight = weight * smoothing.astype(jnp.float32)[:, None]
        if config.weight_fmt is not None:
            weight = formats.fake_quant_ste(weight, config.weight_fmt, 0)
    return dense(act, weight, bias, compute_dtype)


class QuantLinear(Linear):
    """Drop-in `Linear` with fake quantization; same `kernel [in, out]` / `bias` params and paths.

    Build it like `Linear` (plus `config`, `smoothing`), or from an existing layer with
    `QuantLinear.from_linear(layer, config)`, which keeps that layer's param objects.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        param_dtype: DType = jnp.float32,
        compute_dtype: DType = jnp.float32,
        kernel_init=_XAVIER_UNIFORM,
        rngs: nnx.Rngs | None = None,
        config: QuantConfig = QuantConfig(),
        smoothing: Float[Array, " in"] | None = None,
        params: tuple[nnx.Param, nnx.Param | None] | None = None,
    ):
        if params is None:
            if rngs is None:
                raise ValueError("QuantLinear needs `rngs` to initialise, or existing `params`")
            super().__init__(
                in_features,
                out_features,
                use_bias=use_bias,
                param_dtype=param_dtype,
                compute_dtype=compute_dtype,
                kernel_init=kernel_init,
                rngs=rngs,
            )
        else:
            kernel, bias = params
            if kernel.shape != (in_features, out_features):
                raise ValueError(
                    f"kernel shape {kernel.shape} != (in_features, out_features) "
                    f"= {(in_features, out_features)}"
                )
            self.in_features = in_features
            self.out_features = out_features
            self.compute_dtype = compute_dtype
            self.kernel = kernel
            self.bias = bias
        self.config = config
        self.smoothing = nnx.data(None)  # a data slot, so a SmoothingScale can be set later
        if smoothing is not None:
            self.set_smoothing(smoothing)

    @classmethod
    def from_linear(
        cls,
        linear: Linear,
        config: QuantConfig = QuantConfig(),
        smoothing: Float[Array, " in"] | None = None,
    ) -> QuantLinear:
        """A QuantLinear sharing `linear`'s kernel and bias (same param objects, no copy)."""
        return cls(
            linear.in_features,
            linear.out_features,
            compute_dtype=linear.compute_dtype,
            config=config,
            smoothing=smoothing,
            params=(linear.kernel, linear.bias),
        )

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.config = dataclasses.replace(self.config, enabled=bool(value))

    def set_smoothing(self, smoothing: Float[Array, " in"]) -> None:
        """Set per-input-channel factors (positive, shape `[in]`); the weights must be raw."""
        smoothing = jnp.asarray(smoothing, jnp.float32)
        if smoothing.shape != (self.in_features,):
            raise ValueError(
                f"smoothing must have shape ({self.in_features},), got {smoothing.shape}"
            )
        if self.config.weights_quantized:
            raise ValueError("cannot change smoothing after the weights were quantized")
        self.smoothing = SmoothingScale(smoothing)

    def quantize_weights_(self) -> None:
        """Replace the kernel by `Q(W * s)` once and stop re-quantizing it (in place)."""
        if self.config.weights_quantized:
            raise ValueError("weights are already quantized; HiF4 is not idempotent")
        weight = self.kernel[...].astype(jnp.float32)
        if self.smoothing is not None:
            weight = weight * self.smoothing[...][:, None]
        if self.config.weight_fmt is not None:
            weight = formats.fake_quant(weight, self.config.weight_fmt, 0)
        self.kernel[...] = weight.astype(self.kernel.dtype)
        self.config = dataclasses.replace(self.config, weights_quantized=True)

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        bias = None if self.bias is None else self.bias[...]
        smoothing = None if self.smoothing is None else self.smoothing[...]
        return quantized_dense(
            x, self.kernel[...], bias, self.compute_dtype, self.config, smoothing
        )
