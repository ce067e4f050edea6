"""`PackedLinear`: a drop-in `Linear` whose kernel is stored packed (HiF4) and multiplied by the
Pallas kernels (`kernels_pallas.hif4_matmul`).

It computes what `QuantLinear` computes with fake quantization, up to summation order:

    y = Q_act(x / s) @ dequant(W_packed) + b,   W_packed = pack(W * s[:, None], 'hif4', axis=0)

- W4A4 (`act_fmt='hif4'`): the activation is quantized on the fly along K *right before* the
  kernel, by the same `fake_quant` the fake-quant model uses, so it is bit-identical; HiF4 values
  are exact in bf16, so the kernel always takes it as bf16. This step is not fused into the
  kernel, see kernels_pallas/README.md ("W4A4: activation quantization") for why and the numbers.
- W4A16 (`act_fmt=None`): `x / s` in the layer's compute dtype (bf16, or float32).
The product accumulates in float32; the bias is added in float32 and the result is cast to
`compute_dtype`, as `layers.dense` does.

The weight lives in the kernel layout (`kernels_pallas.layout`), tiled once at construction or
load; `canonical_weight()` gives the checkpoint interchange form back, losslessly.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental.pallas import tpu as pltpu
from jaxtyping import Array, Float

from kernels_pallas import TiledWeight, abstract_tiled, hif4_matmul, to_canonical, to_tiled
from kernels_pallas.dispatch import BACKENDS, Backend
from wanjax.models.layers import DType, Linear
from wanjax.quant import floatbits, formats
from wanjax.quant.exact_pack import pack_exact
from wanjax.quant.linear import QuantConfig, QuantLinear, SmoothingScale
from wanjax.quant.packing import PackedWeight, pack

BF16_EXACT_ACT_FORMATS = ("hif4",)  # quantized values exactly representable in bfloat16


class HiF4Codes(nnx.Variable):
    """Tiled HiF4 code words `[K_pad / 8, N_pad]` uint32 (not trainable)."""


class HiF4Scales(nnx.Variable):
    """Tiled HiF4 scale words `[K_pad / 64, N_pad]` uint32 (not trainable)."""


def kernel_activation(
    x: Float[Array, "... k"],
    act_fmt: str | None,
    smoothing: Float[Array, " k"] | None,
    compute_dtype: DType,
) -> Float[Array, "... k"]:
    """The kernel's left operand, computed exactly as `quantized_dense` computes it."""
    if act_fmt is None and smoothing is None:
        return x.astype(compute_dtype)
    act = x.astype(jnp.float32)
    if smoothing is not None:
        act = floatbits.divide(act, smoothing.astype(jnp.float32))
    if act_fmt is None:
        return act.astype(compute_dtype)
    act = formats.fake_quant(act, act_fmt, -1)
    return act.astype(jnp.bfloat16 if act_fmt in BF16_EXACT_ACT_FORMATS else compute_dtype)


def pack_linear_weight(
    kernel: Float[Array, "k n"], smoothing: Float[Array, " k"] | None, weights_quantized: bool
) -> PackedWeight:
    """`pack(W * s)` for raw weights; an exact re-encoding when the kernel already holds
    `Q(W * s)` (HiF4 is not idempotent, so packing those again would change them)."""
    if weights_quantized:
        return pack_exact(np.asarray(kernel, np.float32), axis=0)
    weight = kernel.astype(jnp.float32)
    if smoothing is not None:
        weight = weight * smoothing.astype(jnp.float32)[:, None]
    return pack(weight, "hif4", axis=0)


class PackedLinear(nnx.Module):
    """A linear layer with a packed HiF4 kernel `[in, out]`; same call contract as `Linear`.

    Build one from a layer with `PackedLinear.from_linear`, or with the constructor (zero weights,
    for `nnx.eval_shape` and checkpoint restore targets). `backend` / `interpret` are passed to
    `hif4_matmul` (e.g. 'tpu' with `interpret=True` to run the TPU kernel on a CPU).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        param_dtype: DType = jnp.float32,
        compute_dtype: DType = jnp.float32,
        act_fmt: str | None = "hif4",
        smoothing: bool = False,
        backend: Backend = "auto",
        interpret: bool | pltpu.InterpretParams = False,
    ):
        if act_fmt is not None:
            formats.get_format(act_fmt)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        self.in_features = in_features
        self.out_features = out_features
        self.compute_dtype = compute_dtype
        self.act_fmt = act_fmt
        self.backend = backend
        self.interpret = interpret
        shapes = abstract_tiled((in_features, out_features))
        self.codes = HiF4Codes(jnp.zeros(shapes.codes.shape, jnp.uint32))
        self.scales = HiF4Scales(jnp.zeros(shapes.scales.shape, jnp.uint32))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
        self.smoothing = (
            SmoothingScale(jnp.ones((in_features,), jnp.float32)) if smoothing else nnx.data(None)
        )

    @classmethod
    def from_linear(
        cls,
        linear: Linear,
        config: QuantConfig | None = None,
        *,
        backend: Backend = "auto",
        interpret: bool | pltpu.InterpretParams = False,
    ) -> PackedLinear:
        """Pack a `QuantLinear` (its config and smoothing; `config` must be None) or a plain
        `Linear` with `config` (default: W4A4 HiF4)."""
        smoothing = None
        if isinstance(linear, QuantLinear):
            if config is not None:
                raise ValueError("a QuantLinear is packed with its own config; pass config=None")
            config = linear.config
            smoothing = None if linear.smoothing is None else linear.smoothing[...]
        config = config or QuantConfig()
        if not config.enabled or config.weight_fmt != "hif4":
            raise ValueError(
                f"only enabled HiF4-weight layers can be packed, got weight_fmt="
                f"{config.weight_fmt!r}, enabled={config.enabled}"
            )
        layer = cls(
            linear.in_features, linear.out_features, use_bias=linear.bias is not None,
            param_dtype=linear.kernel.dtype, compute_dtype=linear.compute_dtype,
            act_fmt=config.act_fmt, smoothing=smoothing is not None, backend=backend,
            interpret=interpret,
        )
        packed = pack_linear_weight(linear.kernel[...], smoothing, config.weights_quantized)
        layer.set_weight(to_tiled(packed))
        if linear.bias is not None:
            layer.bias = nnx.Param(linear.bias[...])
        if smoothing is not None:
            layer.smoothing = SmoothingScale(jnp.asarray(smoothing, jnp.float32))
        return layer

    @property
    def weight(self) -> TiledWeight:
        return TiledWeight(self.codes[...], self.scales[...], (self.in_features, self.out_features))

    def set_weight(self, weight: TiledWeight | PackedWeight) -> None:
        """Replace the packed kernel (a canonical weight is tiled first)."""
        if isinstance(weight, PackedWeight):
            weight = to_tiled(weight)
        if weight.shape != (self.in_features, self.out_features):
            raise ValueError(
                f"weight shape {weight.shape} != (in, out) = "
                f"{(self.in_features, self.out_features)}"
            )
        self.codes = HiF4Codes(weight.codes)
        self.scales = HiF4Scales(weight.scales)

    def canonical_weight(self) -> PackedWeight:
        """The canonical `pack(W * s, 'hif4', axis=0)` bytes (what a checkpoint stores)."""
        return to_canonical(self.weight)

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        smoothing = None if self.smoothing is None else self.smoothing[...]
        act = kernel_activation(x, self.act_fmt, smoothing, self.compute_dtype)
        y = hif4_matmul(act, self.weight, backend=self.backend, interpret=self.interpret)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(self.compute_dtype)
