"""Flat `path -> array` views of NNX parameters, the interchange form for conversion and export."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _path_str(path) -> str:
    return ".".join(str(p) for p in path)


def flat_params(model: nnx.Module) -> dict[str, jax.Array]:
    """Our parameters keyed by dotted path, e.g. `blocks.0.self_attn.q.kernel`."""
    state = nnx.state(model, nnx.Param)
    return {_path_str(p): v.get_value() for p, v in nnx.to_flat_state(state)}


def load_flat_params(model: nnx.Module, flat: Mapping[str, np.ndarray | jax.Array]) -> None:
    """Writes `flat` into `model` in place, casting to each parameter's dtype; checks keys and shapes."""
    state = nnx.state(model, nnx.Param)
    expected = {_path_str(p): v for p, v in nnx.to_flat_state(state)}
    missing = sorted(set(expected) - set(flat))
    unknown = sorted(set(flat) - set(expected))
    if missing or unknown:
        raise ValueError(f"parameter keys differ: missing {missing[:8]}, unknown {unknown[:8]}")
    for key, var in expected.items():
        value = flat[key]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)} != model shape {tuple(var.shape)}")
        var.set_value(jnp.asarray(value, dtype=var.dtype))
