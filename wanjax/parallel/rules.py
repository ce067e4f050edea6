"""Logical-axis rules: which named dimension each parameter has, and where it lives on the mesh.

Two tables, both plain data that users can override:
- `PARAM_AXES`: parameter path pattern -> logical axis per dimension (first match wins);
- `LOGICAL_TO_MESH`: logical axis -> mesh axis (or axes, or None for replicated).

A mesh axis that does not divide a dimension is dropped for that parameter (it is replicated
along it), so tiny test models and odd sizes still shard correctly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Axes = tuple[str | None, ...]

# DiT (wanjax.models.dit), umT5 (wanjax.models.umt5) and VAE (wanjax.models.vae) parameters.
PARAM_AXES: tuple[tuple[str, Axes], ...] = (
    # DiT attention: q/k/v project embed -> heads, o projects back; norms act over the full width.
    (r"(self|cross)_attn\.(q|k|v)\.kernel$", ("embed", "heads")),
    (r"(self|cross)_attn\.(q|k|v)\.bias$", ("heads",)),
    (r"(self|cross)_attn\.norm_(q|k)\.scale$", ("heads",)),
    (r"(self|cross)_attn\.o\.kernel$", ("heads", "embed")),
    (r"ffn\.fc1\.kernel$", ("embed", "mlp")),
    (r"ffn\.fc1\.bias$", ("mlp",)),
    (r"ffn\.fc2\.kernel$", ("mlp", "embed")),
    (r"modulation$", (None, None, "embed")),
    (r"patch_embedding\.kernel$", (None, "embed")),
    (r"text_embedding\.linear_1\.kernel$", ("text", "embed")),
    (r"(text|time)_embedding\.linear_2\.kernel$", ("embed", "embed_out")),
    (r"time_embedding\.linear_1\.kernel$", (None, "embed")),
    (r"time_projection\.kernel$", ("embed", "mod")),
    (r"head\.proj\.kernel$", ("embed", None)),
    # umT5 encoder.
    (r"token_embedding\.embedding$", ("vocab", "text")),
    (r"attn\.(q|k|v)\.kernel$", ("text", "heads")),
    (r"attn\.o\.kernel$", ("heads", "text")),
    (r"ffn\.(gate|fc1)\.kernel$", ("text", "mlp")),
    (r"ffn\.fc2\.kernel$", ("mlp", "text")),
    # VAE convolutions: output channels over fsdp; the VAE is small and mostly replicated.
    (r"vae.*\.kernel$", None),
)

# Parameters shard over fsdp *and* sequence (ZeRO-3 over every rank, as the official FSDP +
# Ulysses runs do); activations shard their tokens over sequence.
LOGICAL_TO_MESH: dict[str, str | tuple[str, ...] | None] = {
    "embed": ("fsdp", "sequence"),
    "embed_out": None,
    "text": ("fsdp", "sequence"),
    "heads": "tensor",
    "mlp": "tensor",
    "mod": "tensor",
    "vocab": "tensor",
    "batch": ("data", "fsdp"),
    "seq": "sequence",
}


def logical_axes(path: str, ndim: int, rules: Sequence[tuple[str, Axes]] = PARAM_AXES) -> Axes:
    """The logical axes of a parameter; unmatched or mismatched-rank parameters are replicated."""
    for pattern, axes in rules:
        if re.search(pattern, path):
            if axes is None or len(axes) != ndim:
                return (None,) * ndim
            return axes
    return (None,) * ndim


def spec_for(
    shape: Sequence[int],
    axes: Axes,
    mesh: Mesh,
    logical_to_mesh: Mapping[str, str | tuple[str, ...] | None] = LOGICAL_TO_MESH,
) -> PartitionSpec:
    """Maps logical axes to mesh axes, dropping mesh axes of size 1, axes that do not divide the
    dimension, and axes an earlier dimension already uses."""
    used: set[str] = set()
    spec = []
    for size, name in zip(shape, axes, strict=True):
        target = logical_to_mesh.get(name) if name else None
        names = (target,) if isinstance(target, str) else tuple(target or ())
        kept = []
        for n in names:
            if (n in mesh.axis_names and n not in used and mesh.shape[n] > 1
                    and size % (mesh.shape[n] * _prod(mesh, kept)) == 0):
                kept.append(n)
        used.update(kept)
        spec.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
    return PartitionSpec(*spec)


def _prod(mesh: Mesh, names: Sequence[str]) -> int:
    out = 1
    for n in names:
        out *= mesh.shape[n]
    return out


def param_shardings(
    model_or_state, mesh: Mesh, rules: Sequence[tuple[str, Axes]] = PARAM_AXES,
    logical_to_mesh: Mapping = LOGICAL_TO_MESH,
) -> nnx.State:
    """A `NamedSharding` for every `nnx.Param` of a model (abstract or concrete) or of its state."""
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(
        model_or_state, nnx.Param
    )

    def one(path, var):
        name = ".".join(str(p) for p in path)
        axes = logical_axes(name, len(var.shape), rules)
        return var.replace(NamedSharding(mesh, spec_for(var.shape, axes, mesh, logical_to_mesh)))

    return nnx.map_state(one, state)


def shard_params(model: nnx.Module, mesh: Mesh, **kwargs) -> nnx.Module:
    """Places a (host or single-device) model's params on `mesh` by the rules, in place."""
    shardings = param_shardings(model, mesh, **kwargs)
    state = nnx.state(model, nnx.Param)
    placed = jax.tree.map(
        lambda x, s: jax.device_put(x, s), state, shardings,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    nnx.update(model, placed)
    return model


def create_sharded(make: Callable[[], nnx.Module], mesh: Mesh, **kwargs) -> nnx.Module:
    """Builds `make()` with every parameter created directly in its sharding (no host copy).

    The initialiser runs under `jit` with `out_shardings`, so each device only ever holds its
    own shards; non-parameter state (e.g. RNG counters) is replicated.
    """
    abstract = nnx.eval_shape(make)
    graphdef, state = nnx.split(abstract)
    param_sh = param_shardings(abstract, mesh, **kwargs)
    replicated = NamedSharding(mesh, PartitionSpec())
    flat_params = {p: v for p, v in nnx.to_flat_state(param_sh)}
    shardings = nnx.map_state(
        lambda path, v: flat_params[path].get_value() if path in flat_params else replicated,
        state,
    )
    state = jax.jit(lambda: nnx.split(make())[1], out_shardings=shardings)()
    return nnx.merge(graphdef, state)
