"""Calibrate and freeze one expert's in-scope linears: smoothing, then RTN or GPTQ weights.

Each selected `Linear` becomes a `QuantLinear` (W4A4 in `fmt`) whose kernel holds the final
quantized values (`weights_quantized=True`; HiF4 is not idempotent, so it is never re-quantized)
and, where smoothing was kept and could not be folded, its smoothing vector. Per layer the report
records the chosen alpha, the fold, and W4A4 output errors on the recorded calibration tokens:
`rtn` (plain round-to-nearest, no smoothing) and `final` (this layer as calibrated).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from train.calibration import gptq, smoothing
from train.calibration.sensitivity import block_of
from train.calibration.stats import ExpertStats, linear_paths
from wanjax.models.dit import WanDiT
from wanjax.quant.linear import QuantConfig, QuantLinear
from wanjax.quant.rules import QuantRule, apply_quantization, path_str

ALGORITHMS = ("rtn", "smooth", "gptq", "smooth+gptq")


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    fmt: str = "hif4"
    algorithm: str = "smooth+gptq"
    alphas: tuple[float, ...] = smoothing.ALPHAS
    fold: bool = True
    percdamp: float = 0.01
    max_samples: int = 1024

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")

    @property
    def smooth(self) -> bool:
        return "smooth" in self.algorithm

    @property
    def gptq(self) -> bool:
        return "gptq" in self.algorithm


def _rel(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def _cos(out, ref) -> float:
    out, ref = np.ravel(np.asarray(out, np.float64)), np.ravel(np.asarray(ref, np.float64))
    return float(out @ ref / max(np.linalg.norm(out) * np.linalg.norm(ref), 1e-30))


def _order(paths: list[str]) -> list[str]:
    """Foldable layers of each block first: folding rescales their producers (v, cross_norm),
    which must still be unquantized when it happens."""
    def key(p):
        b = block_of(p)
        name = p[len(b) + 1:] if b else p
        return (int(b.split(".")[1]) if b else -1, name not in smoothing.FOLDABLE, p)

    return sorted(paths, key=key)


def _node(module, dotted: str):
    node = module
    for part in dotted.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def calibrate_layers(
    module: WanDiT, stats: ExpertStats, opts: LayerOptions, include, exclude=(),
) -> dict[str, dict]:
    """Quantize the in-scope linears of `module` in place; returns the per-layer report."""
    targets = linear_paths(module, include, exclude)
    missing = [p for p in targets if p not in stats.layers]
    if missing:
        raise ValueError(f"no calibration statistics for {missing[:4]}")
    config = QuantConfig(opts.fmt, opts.fmt)
    apply_quantization(module, QuantRule(include=tuple(targets), config=config))
    report = {}
    for path in _order(targets):
        layer: QuantLinear = _node(module, path)
        st = stats.layers[path]
        x = st.sample_rows(opts.max_samples).astype(np.float32)
        w0 = np.asarray(layer.kernel[...], np.float32)
        entry = {"tokens": st.count, "rtn": float(smoothing.w4a4_error(jnp.asarray(x), jnp.asarray(w0),
                                                    jnp.ones((w0.shape[0],)), opts.fmt))}
        scales, folded = None, None
        if opts.smooth:
            choice = smoothing.search_alpha(x, w0, st.absmax, opts.fmt, opts.alphas)
            entry["alpha"] = choice.alpha
            entry["alpha_errors"] = {str(a): e for a, e in choice.errors.items()}
            scales = choice.scales
        block = block_of(path)
        name = path[len(block) + 1:] if block else path
        if scales is not None and opts.fold and block and name in smoothing.FOLDABLE:
            producer = _node(module, f"{block}.{smoothing.FOLDABLE[name]}")
            if not getattr(getattr(producer, "config", None), "weights_quantized", False):
                smoothing.fold_into_producer(_node(module, block), name, scales)
                folded = f"{block}.{smoothing.FOLDABLE[name]}"
        # The layer's actual input from now on, and its full-precision output on it.
        x_in = x / scales if folded else x
        w_now = np.asarray(layer.kernel[...], np.float32)
        bias = None if layer.bias is None else np.asarray(layer.bias[...], np.float32)
        ref = x_in.astype(np.float64) @ w_now + (0 if bias is None else bias)
        if scales is not None and not folded:
            layer.set_smoothing(scales)
        s_eff = scales if (scales is not None and not folded) else None
        if opts.gptq:
            if st.xtx is None:
                raise ValueError(f"{path}: GPTQ needs X^T X; collect with xtx=True")
            w_eff = w_now * (s_eff[:, None] if s_eff is not None else 1.0)
            h = st.xtx
            if scales is not None:  # the quantized operand is x / s for both fold and explicit
                h = h / np.outer(scales, scales)
            q = gptq.gptq_quantize(w_eff, h, opts.fmt, percdamp=opts.percdamp)
            layer.kernel[...] = jnp.asarray(q, layer.kernel.dtype)
            layer.config = dataclasses.replace(layer.config, weights_quantized=True)
        else:
            layer.quantize_weights_()
        out = np.asarray(layer(jnp.asarray(x_in)), np.float64)
        entry.update(final=_rel(out, ref), cos=_cos(out, ref), folded=folded,
                     smoothing="folded" if folded else ("explicit" if s_eff is not None else None),
                     weights="gptq" if opts.gptq else "rtn")
        report[path] = entry
    return report


def quantized_layers(module: WanDiT) -> dict[str, QuantLinear]:
    return {path_str(p): n for p, n in nnx.iter_graph(module) if isinstance(n, QuantLinear)}
