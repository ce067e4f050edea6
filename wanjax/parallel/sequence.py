"""Sequence parallelism: token sharding of activations and Ulysses self-attention.

Ulysses (DeepSpeed-Ulysses, as the official `--ulysses_size`): inside `shard_map`, an all-to-all
turns "all heads of my tokens" into "some heads of all tokens", attention runs locally with the
padded keys masked, and a second all-to-all turns it back. Heads must divide by
tensor x sequence. Cross-attention needs no exchange: the text context is replicated.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float

from wanjax.parallel.mesh import axis_size


def current_mesh():
    """The abstract mesh of the enclosing `jax.set_mesh`/`use_mesh` context, or None."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh is None or mesh.empty else mesh


def batch_axes(batch: int) -> tuple[str, ...] | None:
    """Mesh axes the batch dimension is split over: data then fsdp, as far as they divide it."""
    mesh = current_mesh()
    if mesh is None:
        return None
    kept, prod = [], 1
    for name in ("data", "fsdp"):
        if name in mesh.axis_names and batch % (prod * mesh.shape[name]) == 0:
            kept.append(name)
            prod *= mesh.shape[name]
    return tuple(kept) or None


def constrain_tokens(x: Float[Array, "b l d"]) -> Float[Array, "b l d"]:
    """Shards token activations as [batch over data/fsdp, tokens over sequence, replicated]."""
    mesh = current_mesh()
    if mesh is None:
        return x
    seq = "sequence" if axis_size("sequence") > 1 and x.shape[1] % axis_size("sequence") == 0 else None
    return jax.lax.with_sharding_constraint(x, P(batch_axes(x.shape[0]), seq, None))


def ulysses_attention(
    q: Float[Array, "b l n d"],
    k: Float[Array, "b l n d"],
    v: Float[Array, "b l n d"],
    key_lengths: Array | None,
    local_attention: Callable[..., Array],
) -> Float[Array, "b l n d"]:
    """Self-attention with tokens sharded over the `sequence` mesh axis (exact, not approximate)."""
    mesh = current_mesh()
    seq, tensor = axis_size("sequence"), axis_size("tensor")
    b, length, heads, _ = q.shape
    if heads % (seq * tensor):
        raise ValueError(
            f"{heads} heads do not split over tensor={tensor} x sequence={seq}; choose mesh sizes "
            f"whose product divides the head count"
        )
    if length % seq:
        raise ValueError(f"{length} tokens are not padded to a multiple of sequence={seq}")
    bax = batch_axes(b)
    head_axis = "tensor" if tensor > 1 else None
    spec = P(bax, "sequence", head_axis, None)

    def local(q, k, v, lengths):
        to_heads = dict(axis_name="sequence", split_axis=2, concat_axis=1, tiled=True)
        q, k, v = (jax.lax.all_to_all(t, **to_heads) for t in (q, k, v))
        out = local_attention(q, k, v, lengths)
        return jax.lax.all_to_all(out, "sequence", split_axis=1, concat_axis=2, tiled=True)

    if key_lengths is None:
        key_lengths = jax.numpy.full((b,), length, jax.numpy.int32)
    return jax.shard_map(
        local, mesh=mesh, in_specs=(spec, spec, spec, P(bax)), out_specs=spec, check_vma=False
    )(q, k, v, key_lengths)
