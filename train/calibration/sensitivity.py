"""Which blocks to keep in full precision: a leave-one-block-out sweep per expert.

For each block b of the expert, quantize every in-scope linear except those of block b (plain
round-to-nearest W4A4 in the chosen format; the probe layers select fake-quant or fp output by a
flag held as data, so the whole sweep compiles once) and measure the expert's velocity error against its
full-precision self on the calibration inputs it saw (`ExpertStats.inputs`: the states and
timesteps of the steps it served). The blocks whose exclusion lowers the error most are the most
sensitive; `choose_protected` keeps the top k (or an explicit list).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from train.calibration.stats import ExpertInputs, _walk, linear_paths
from train.calibration.trajectory import _guided_jit
from wanjax.models.dit import WanDiT
from wanjax.quant.linear import QuantConfig, quantized_dense
from wanjax.quant.rules import _child, _replace_child

_BLOCK = re.compile(r"^(blocks\.\d+)\.")


def block_of(path: str) -> str | None:
    m = _BLOCK.match(path)
    return m.group(1) if m else None


def relative_error(a, b) -> float:
    """Mean over samples of ||a - b|| / ||b|| (flattened per sample)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return float(np.mean(np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1),
                                                                    1e-30)))


def _pick(inputs: ExpertInputs, max_inputs: int) -> list[int]:
    n = len(inputs.x)
    if n <= max_inputs:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, max_inputs).round().astype(int).tolist()))


def velocity_error(module_q: WanDiT, module_fp: WanDiT, inputs: ExpertInputs, scale: float,
                   max_inputs: int = 16) -> float:
    """Mean relative velocity error of `module_q` against `module_fp` on recorded inputs."""
    gq, sq = nnx.split(module_q)
    gf, sf = nnx.split(module_fp)
    fq, ff = _guided_jit(gq), _guided_jit(gf)
    errs = []
    for i in _pick(inputs, max_inputs):
        x, t = inputs.x[i], jnp.float32(inputs.t[i])
        ctx = inputs.context[i]
        neg = inputs.negative[i] if scale != 1.0 else None
        errs.append(relative_error(fq(sq, x, t, ctx, neg, float(scale)),
                                   ff(sf, x, t, ctx, neg, float(scale))))
    return float(np.mean(errs)) if errs else 0.0


class _SweepFlag(nnx.Variable):
    """1.0: the layer runs quantized, 0.0: in full precision (data, so one compile serves all)."""


class _SweepLinear(nnx.Module):
    """A `Linear` that computes both its fake-quantized and its fp output and selects by a flag."""

    def __init__(self, inner, fmt: str):
        self.inner = inner
        self.config = QuantConfig(fmt, fmt)
        self.in_features, self.out_features = inner.in_features, inner.out_features
        self.compute_dtype = inner.compute_dtype
        self.on = _SweepFlag(jnp.ones((), jnp.float32))

    def __call__(self, x):
        bias = None if self.inner.bias is None else self.inner.bias[...]
        q = quantized_dense(x, self.inner.kernel[...], bias, self.compute_dtype, self.config)
        fp = self.inner(x)
        return jnp.where(self.on[...] > 0, q, fp)


def sensitivity_sweep(
    module: WanDiT, inputs: ExpertInputs, scale: float, fmt: str,
    include: Sequence[str], exclude: Sequence[str] = (), max_inputs: int = 16,
) -> tuple[float, dict[str, float]]:
    """`(error with every block quantized, {block: error with that block kept in fp})`."""
    targets = linear_paths(module, include, exclude)
    blocks = sorted({b for p in targets if (b := block_of(p))}, key=lambda b: int(b.split(".")[1]))
    probe = nnx.clone(module)
    layers = {}
    for path in targets:
        parent, key = _walk(probe, path)
        layers[path] = _SweepLinear(_child(parent, key), fmt)
        _replace_child(parent, key, layers[path])
    base = velocity_error(probe, module, inputs, scale, max_inputs)
    out = {}
    for b in blocks:
        mine = [n for p, n in layers.items() if p.startswith(b + ".")]
        for n in mine:
            n.on[...] = jnp.zeros((), jnp.float32)
        out[b] = velocity_error(probe, module, inputs, scale, max_inputs)
        for n in mine:
            n.on[...] = jnp.ones((), jnp.float32)
    return base, out


def choose_protected(protect: str | Sequence[str], k: int, sweep: dict[str, float] | None
                     ) -> list[str]:
    """'auto': the k blocks whose exclusion helps most; 'none': []; else the given names."""
    if isinstance(protect, str):
        if protect == "none":
            return []
        if protect == "auto":
            if sweep is None:
                raise ValueError("protect='auto' needs a sensitivity sweep")
            return sorted(sweep, key=lambda b: (sweep[b], int(b.split(".")[1])))[:k]
        protect = [p.strip() for p in protect.split(",") if p.strip()]
    return list(protect)


def protect_patterns(protected: Sequence[str]) -> tuple[str, ...]:
    """Exclude globs for protected blocks (`blocks.0` -> `blocks.0.*`) or layer paths."""
    return tuple(f"{p}.*" if re.fullmatch(r"blocks\.\d+", p) else p for p in protected)
