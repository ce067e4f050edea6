"""A packed HiF4 weight survives an orbax save + restore (metadata comes from the target)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from wanjax.quant import PackedWeight, abstract_packed, pack, unpack


def test_orbax_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tree = {
        "ffn_fc1": pack(jnp.asarray(rng.standard_normal((96, 40)), jnp.float32), axis=0),
        "q": pack(jnp.asarray(rng.standard_normal((3, 130)), jnp.float32), axis=-1),
    }
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "packed", tree)
        checkpointer.wait_until_finished()
        target = {
            "ffn_fc1": abstract_packed((96, 40), axis=0),
            "q": jax.eval_shape(lambda: tree["q"]),  # the other way to build a target
        }
        restored = checkpointer.restore(tmp_path / "packed", target)

    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    for name, packed in tree.items():
        got = restored[name]
        assert isinstance(got, PackedWeight)
        assert (got.shape, got.axis, got.fmt) == (packed.shape, packed.axis, packed.fmt)
        assert got.codes.dtype == jnp.uint8 and got.scales.dtype == jnp.uint8
        assert np.array_equal(np.asarray(got.codes), np.asarray(packed.codes))
        assert np.array_equal(np.asarray(got.scales), np.asarray(packed.scales))
        assert np.array_equal(np.asarray(unpack(got)), np.asarray(unpack(packed)))
