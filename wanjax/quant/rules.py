"""Quantize a model by rule: swap matching `Linear` submodules for `QuantLinear`, in place.

Paths are dot-joined module paths (`blocks.3.self_attn.q`, `head.proj`) matched with shell-style
globs (`fnmatch`, where `*` also crosses dots). The first rule whose `include` matches and whose
`exclude` does not decides the layer's `QuantConfig`; e.g. every linear in the blocks except
block 0:

    apply_quantization(model, QuantRule(include=("blocks.*",), exclude=("blocks.0.*",)))

Why not qwix (google/qwix 0.1.8, read from its wheel; not a dependency):
qwix's providers intercept `jax.lax.dot_general`/`einsum` by patching those functions
process-wide while the model runs, find the calling module by walking Python frames for a `self`,
and need one traced call with sample inputs to set weights up. A custom provider could override
`dot_general` and call our HiF4 function, but then everything qwix contributes beyond that hook
would be bypassed: its numerics are `QArray(qvalue, scale, zero_point)` with one scale level
(int/fp dtypes, `nvfp4`/`mxfp4`) and absmax-style calibration, which cannot express HiF4's
E6M2 + per-8 + per-4 exponents or its packed bytes; the smoothing vector and the
"weights already quantized" state (HiF4 is not idempotent) would have to live outside it; and
which `dot_general` operand is the weight would be inferred rather than known. This model already
routes every matmul through `Linear`, so replacing those modules is explicit, needs no global
patching or sample inputs, keeps param paths (checkpoints load unchanged), and composes with
`jit`/`vmap`/`grad` and orbax like any NNX module.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from typing import Any

from flax import nnx

from wanjax.models.layers import Linear
from wanjax.quant.linear import QuantConfig, QuantLinear


@dataclasses.dataclass(frozen=True)
class QuantRule:
    """Quantize the `Linear` layers whose path matches `include` and not `exclude`."""

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    config: QuantConfig = QuantConfig()

    def __post_init__(self):
        for field in ("include", "exclude"):
            value = getattr(self, field)
            if isinstance(value, str):
                raise ValueError(f"{field} must be a tuple of patterns, got the string {value!r}")

    def matches(self, path: str) -> bool:
        included = any(fnmatch.fnmatchcase(path, p) for p in self.include)
        return included and not any(fnmatch.fnmatchcase(path, p) for p in self.exclude)


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    """What `apply_quantization` did: `quantized` maps path -> config; the rest stayed as is."""

    quantized: dict[str, QuantConfig]
    skipped: tuple[str, ...]
    already_quantized: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"quantized {len(self.quantized)} linear layers:"]
        lines += [f"  {p}: w={c.weight_fmt} a={c.act_fmt}" for p, c in self.quantized.items()]
        lines.append(f"kept {len(self.skipped)} in full precision: {', '.join(self.skipped)}")
        return "\n".join(lines)


def path_str(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path)


def _child(node: Any, key: Any) -> Any:
    return getattr(node, key) if isinstance(key, str) and hasattr(node, key) else node[key]


def _replace_child(parent: Any, key: Any, new: Any) -> None:
    if isinstance(key, int) or isinstance(parent, dict | nnx.List | list):
        parent[key] = new
    else:
        setattr(parent, key, new)


def apply_quantization(
    model: nnx.Module, rules: QuantRule | Sequence[QuantRule]
) -> QuantizationReport:
    """Replace each matching `Linear` in `model` by a `QuantLinear` sharing its params (in place).

    Layers that are already `QuantLinear` are left alone and listed in `already_quantized`.
    """
    rules = (rules,) if isinstance(rules, QuantRule) else tuple(rules)
    if not rules:
        raise ValueError("apply_quantization needs at least one QuantRule")
    quantized, skipped, already = {}, [], []
    targets = []
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, Linear):
            continue
        name = path_str(path)
        if isinstance(node, QuantLinear):
            already.append(name)
            continue
        rule = next((r for r in rules if r.matches(name)), None)
        if rule is None or not path:
            skipped.append(name)
            continue
        targets.append((path, node, rule.config))

    for path, node, config in targets:
        parent = model
        for key in path[:-1]:
            parent = _child(parent, key)
        _replace_child(parent, path[-1], QuantLinear.from_linear(node, config))
        quantized[path_str(path)] = config
    return QuantizationReport(quantized, tuple(sorted(skipped)), tuple(sorted(already)))
