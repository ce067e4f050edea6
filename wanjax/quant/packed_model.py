"""Quantized inference of a whole DiT: pack its linears by rule, save and load packed checkpoints.

    report = pack_model(model, rules)              # QuantLinear / Linear -> PackedLinear, in place
    save_packed(path, model, meta={...})           # canonical HiF4 bytes + protected params (orbax)
    model = load_packed(path, cfg)                 # tiles the weights for the kernels once

Which layers: a linear whose path matches a `QuantRule` (the first that matches; default: every
linear inside `blocks`) is packed. A `QuantLinear` keeps its own config and smoothing (the
calibration result); a plain `Linear` takes the rule's config. Everything else (embeddings, time
projection, head, layers whose config is disabled) is "protected": kept as a full-precision
`Linear` in its parameter dtype. A model with enabled fake-quant layers left unpacked is refused
by `save_packed`, since they would load as plain linears.

Checkpoint layout (a directory):

    packed.json   format, version, DiT config, precision, packed layers (shape, bias, activation
                  format, smoothing), protected layers, user `meta`
    params/       `wanjax.io.checkpoint.save_params` groups (one orbax checkpoint per block):
                  protected params as stored, and per packed layer `<path>.weight.codes` /
                  `<path>.weight.scales` (the canonical 36 bytes per group, `wanjax.quant.pack`
                  of the `[in, out]` kernel along `in`), `<path>.bias`, `<path>.smoothing`
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from kernels_pallas import to_tiled
from kernels_pallas.dispatch import Backend
from wanjax.config import DiTConfig, Precision
from wanjax.io.checkpoint import dit_config_to_json, load_params, save_params
from wanjax.models.dit import WanDiT
from wanjax.models.layers import Linear
from wanjax.quant.linear import QuantLinear
from wanjax.quant.packed_linear import PackedLinear
from wanjax.quant.packing import PackedWeight, abstract_packed
from wanjax.quant.rules import QuantRule, path_str

FORMAT = "wanjax-hif4-packed"
VERSION = 1
MANIFEST = "packed.json"
PARAMS_DIR = "params"
DEFAULT_RULES = (QuantRule(include=("blocks.*",)),)
_BF16 = Precision(jnp.bfloat16, jnp.bfloat16)


@dataclasses.dataclass(frozen=True)
class PackedLayerSpec:
    """What a packed layer is, as the manifest records it."""

    in_features: int
    out_features: int
    use_bias: bool
    act_fmt: str | None
    smoothing: bool


@dataclasses.dataclass(frozen=True)
class PackReport:
    """`packed`: path -> spec; `protected`: linears kept in full precision; `packed_bytes`: the
    HiF4 codes and scales of the packed layers (kernel layout)."""

    packed: dict[str, PackedLayerSpec]
    protected: tuple[str, ...]
    packed_bytes: int

    def __str__(self) -> str:
        acts = sorted({str(s.act_fmt) for s in self.packed.values()})
        return (
            f"packed {len(self.packed)} linears (activations: {', '.join(acts)}), "
            f"{self.packed_bytes / 1e9:.3f} GB; protected {len(self.protected)}: "
            + ", ".join(self.protected)
        )


def _spec(layer: PackedLinear) -> PackedLayerSpec:
    return PackedLayerSpec(
        layer.in_features, layer.out_features, layer.bias is not None, layer.act_fmt,
        layer.smoothing is not None,
    )


def _linears(model: nnx.Module) -> list[tuple[tuple, nnx.Module]]:
    return [(p, n) for p, n in nnx.iter_graph(model) if isinstance(n, Linear | PackedLinear) and p]


def _set_submodule(model: nnx.Module, path: tuple, new: nnx.Module) -> None:
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(path[-1], int):
        parent[path[-1]] = new
    else:
        setattr(parent, path[-1], new)


def pack_model(
    model: nnx.Module,
    rules: QuantRule | Sequence[QuantRule] = DEFAULT_RULES,
    *,
    backend: Backend = "auto",
    interpret: Any = False,
) -> PackReport:
    """Replace the selected linears of `model` by `PackedLinear`s (in place); see the module
    docstring for the selection. `backend` / `interpret` go to every packed layer."""
    rules = (rules,) if isinstance(rules, QuantRule) else tuple(rules)
    if not rules:
        raise ValueError("pack_model needs at least one QuantRule")
    packed, protected = {}, []
    for path, node in _linears(model):
        name = path_str(path)
        if isinstance(node, PackedLinear):
            packed[name] = node
            continue
        rule = next((r for r in rules if r.matches(name)), None)
        own = isinstance(node, QuantLinear)
        if rule is None or not (node.config if own else rule.config).enabled:
            protected.append(name)
            continue
        config = None if own else rule.config
        layer = PackedLinear.from_linear(node, config, backend=backend, interpret=interpret)
        _set_submodule(model, path, layer)
        packed[name] = layer
    return PackReport(
        {k: _spec(v) for k, v in packed.items()}, tuple(sorted(protected)),
        sum(v.weight.nbytes() for v in packed.values()),
    )


def set_kernel_backend(model: nnx.Module, backend: Backend, interpret: Any = False) -> None:
    """Point every `PackedLinear` of `model` at another backend (e.g. 'tpu' + interpret)."""
    for _, node in _linears(model):
        if isinstance(node, PackedLinear):
            node.backend, node.interpret = backend, interpret


def _precision(model: WanDiT) -> Precision:
    return Precision(model.patch_embedding.kernel.dtype, model.patch_embedding.compute_dtype)


def save_packed(path: str | Path, model: WanDiT, meta: dict | None = None) -> None:
    """Write a packed model (after `pack_model`) to the directory `path` (must not exist)."""
    path = Path(path).absolute()
    layers = {path_str(p): n for p, n in _linears(model) if isinstance(n, PackedLinear)}
    if not layers:
        raise ValueError("the model has no PackedLinear layers; run pack_model first")
    fake = [path_str(p) for p, n in _linears(model) if isinstance(n, QuantLinear) and n.enabled]
    if fake:
        raise ValueError(
            f"fake-quantized layers {fake[:4]} would load as plain Linears; pack them (a rule "
            "that matches them) or disable them"
        )
    prec = _precision(model)
    flat = {path_str(p): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model))}
    for name, layer in layers.items():
        del flat[f"{name}.codes"], flat[f"{name}.scales"]
        canonical = layer.canonical_weight()
        flat[f"{name}.weight.codes"], flat[f"{name}.weight.scales"] = canonical.codes, canonical.scales
    manifest = {
        "format": FORMAT, "version": VERSION, "config": dit_config_to_json(model.cfg),
        "precision": {"param_dtype": jnp.dtype(prec.param_dtype).name,
                      "compute_dtype": jnp.dtype(prec.compute_dtype).name},
        "layers": {k: dataclasses.asdict(_spec(v)) for k, v in sorted(layers.items())},
        "protected": sorted(path_str(p) for p, n in _linears(model) if isinstance(n, Linear)),
        "meta": meta or {},
    }
    path.mkdir(parents=True, exist_ok=False)
    save_params(path / PARAMS_DIR, flat)
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def read_packed_manifest(path: str | Path) -> dict:
    """The manifest of a packed checkpoint; ValueError if it is not one this code reads."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a packed checkpoint (no {MANIFEST})")
    manifest = json.loads(file.read_text())
    if (manifest.get("format"), manifest.get("version")) != (FORMAT, VERSION):
        raise ValueError(
            f"{file}: format {manifest.get('format')!r} v{manifest.get('version')} is not "
            f"{FORMAT!r} v{VERSION}"
        )
    return manifest


def abstract_packed_model(
    cfg: DiTConfig, prec: Precision, layers: dict[str, PackedLayerSpec], *,
    backend: Backend = "auto", interpret: Any = False,
) -> WanDiT:
    """A `WanDiT` of shapes only (`nnx.eval_shape`) with `PackedLinear`s at `layers`."""

    def build() -> WanDiT:
        model = WanDiT(cfg, prec, rngs=nnx.Rngs(0))
        found = {path_str(p): p for p, _ in _linears(model)}
        for name, spec in layers.items():
            if name not in found:
                raise ValueError(f"packed layer {name!r} is not a linear of this model")
            _set_submodule(model, found[name], PackedLinear(
                spec.in_features, spec.out_features, use_bias=spec.use_bias,
                param_dtype=prec.param_dtype, compute_dtype=prec.compute_dtype,
                act_fmt=spec.act_fmt, smoothing=spec.smoothing, backend=backend,
                interpret=interpret,
            ))
        return model

    return nnx.eval_shape(build)


def load_packed(
    path: str | Path, cfg: DiTConfig, *, backend: Backend = "auto", interpret: Any = False
) -> WanDiT:
    """Load a packed checkpoint as a `WanDiT` whose packed layers run `hif4_matmul`."""
    manifest = read_packed_manifest(path)
    if json.loads(json.dumps(dit_config_to_json(cfg))) != manifest["config"]:
        raise ValueError(f"{path} holds a model with config {manifest['config']}, not {cfg}")
    prec = Precision(jnp.dtype(manifest["precision"]["param_dtype"]),
                     jnp.dtype(manifest["precision"]["compute_dtype"]))
    layers = {k: PackedLayerSpec(**v) for k, v in manifest["layers"].items()}
    model = abstract_packed_model(cfg, prec, layers, backend=backend, interpret=interpret)
    graphdef, state = nnx.split(model)
    variables = {path_str(p): v for p, v in nnx.to_flat_state(state)}
    wanted = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in variables.items()}
    for name, spec in layers.items():
        del wanted[f"{name}.codes"], wanted[f"{name}.scales"]
        canonical = abstract_packed((spec.in_features, spec.out_features), axis=0)
        wanted[f"{name}.weight.codes"] = canonical.codes
        wanted[f"{name}.weight.scales"] = canonical.scales
    flat = load_params(Path(path).absolute() / PARAMS_DIR, wanted)
    for name, spec in layers.items():
        shape = (spec.in_features, spec.out_features)
        tiled = to_tiled(PackedWeight(
            codes=flat.pop(f"{name}.weight.codes"), scales=flat.pop(f"{name}.weight.scales"),
            shape=shape, axis=0,
        ))
        flat[f"{name}.codes"], flat[f"{name}.scales"] = tiled.codes, tiled.scales
    for key, var in variables.items():
        var.set_value(flat[key])
    return nnx.merge(graphdef, state)


@dataclasses.dataclass(frozen=True)
class PackedMemory:
    """Bytes of one packed expert, from shapes: HiF4 codes + scales of the packed linears, their
    bias and smoothing vectors, and every other (protected) parameter."""

    packed_linears: int
    packed_extras: int
    protected: int
    packed_params: int  # values in the packed kernels


def packed_memory(
    cfg: DiTConfig, prec: Precision = _BF16,
    rules: QuantRule | Sequence[QuantRule] = DEFAULT_RULES, smoothing: bool = True,
) -> PackedMemory:
    """Packed bytes per expert from `nnx.eval_shape` (nothing is allocated)."""
    rules = (rules,) if isinstance(rules, QuantRule) else tuple(rules)
    plain = nnx.eval_shape(lambda: WanDiT(cfg, prec, rngs=nnx.Rngs(0)))
    layers = {}
    for path, node in _linears(plain):
        name = path_str(path)
        if any(r.matches(name) for r in rules):
            layers[name] = PackedLayerSpec(
                node.in_features, node.out_features, node.bias is not None, "hif4", smoothing
            )
    model = abstract_packed_model(cfg, prec, layers)
    linears = extras = protected = 0
    packed_prefixes = tuple(f"{k}." for k in layers)
    for path, var in nnx.to_flat_state(nnx.state(model)):
        name = path_str(path)
        size = var.size * jnp.dtype(var.dtype).itemsize
        if not name.startswith(packed_prefixes):
            protected += size
        elif name.endswith((".codes", ".scales")):
            linears += size
        else:
            extras += size
    values = sum(s.in_features * s.out_features for s in layers.values())
    return PackedMemory(linears, extras, protected, values)
