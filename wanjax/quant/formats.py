"""One config string picks the 4-bit format: `fake_quant(x, fmt, axis)` and its STE variant."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from wanjax.quant import baselines, grouping, hif4


class Format(NamedTuple):
    """A block format: its quantize-dequantize function and its group size along the axis."""

    fake_quant: Callable[..., Float[Array, "*shape"]]
    group_size: int
    description: str


FORMATS: dict[str, Format] = {
    "hif4": Format(hif4.fake_quant_hif4, hif4.GROUP_SIZE, "HiF4: E6M2 + 8xE1 + 16xE1 + 64xS1P2"),
    "nvfp4": Format(
        baselines.fake_quant_nvfp4, baselines.NVFP4_GROUP, "NVFP4-style: E4M3 scale per 16, E2M1"
    ),
    "mxfp4": Format(
        baselines.fake_quant_mxfp4,
        baselines.MXFP4_GROUP,
        "MXFP4-style (reference library exponent rule, not OCP): 2^e per 32, E2M1",
    ),
    "int4": Format(baselines.fake_quant_int4, baselines.INT4_GROUP, "INT4: absmax/7 per 64"),
}


def get_format(fmt: str) -> Format:
    """The format named `fmt`; ValueError listing the valid names otherwise."""
    try:
        return FORMATS[fmt]
    except (KeyError, TypeError):
        raise ValueError(f"unknown format {fmt!r}; valid formats: {sorted(FORMATS)}") from None


@functools.partial(jax.jit, static_argnames=("fmt", "axis"))
def _fake_quant_jit(x: Float[Array, "*shape"], fmt: str, axis: int) -> Float[Array, "*shape"]:
    return FORMATS[fmt].fake_quant(x, axis=axis)


def fake_quant(
    x: Float[Array, "*shape"], fmt: str = "hif4", axis: int = -1
) -> Float[Array, "*shape"]:
    """Quantize-dequantize `x` along `axis` in format `fmt`; same shape and dtype as `x`.

    Pure and jitted (`fmt` and `axis` are static), so it composes with `vmap`, `jit` and `grad`;
    its gradient is zero almost everywhere, see `fake_quant_ste` for training.
    """
    get_format(fmt)
    grouping.check_floating(x)
    return _fake_quant_jit(x, fmt, grouping.normalize_axis(axis, jnp.ndim(x)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def fake_quant_ste(
    x: Float[Array, "*shape"], fmt: str = "hif4", axis: int = -1
) -> Float[Array, "*shape"]:
    """`fake_quant` whose derivative is the identity (straight-through estimator).

    The forward value is exactly `fake_quant(x)` (not `x + stop_gradient(q - x)`, which can differ
    from q in the last bit).
    """
    return fake_quant(x, fmt, axis)


@fake_quant_ste.defjvp
def _fake_quant_ste_jvp(fmt, axis, primals, tangents):
    (x,), (dx,) = primals, tangents
    return fake_quant(x, fmt, axis), dx
