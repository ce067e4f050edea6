"""`load_dit`: from a converted checkpoint folder to a compiled, callable DiT expert."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from wanjax.config import Precision
from wanjax.io import checkpoint
from wanjax.models.dit import WanDiT
from wanjax.models.runner import DiT

_DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}


def _dtype(dtype) -> jnp.dtype:
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
        return jnp.dtype(_DTYPES[dtype])
    d = jnp.dtype(dtype)
    if d not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"dtype must be float32 or bfloat16, got {d}")
    return d


def component_name(meta: dict, expert: str) -> str:
    """The manifest component holding `expert` ('high' | 'low'); single-model folders hold `dit`."""
    if expert not in ("high", "low"):
        raise ValueError(f"expert must be 'high' or 'low', got {expert!r}")
    comps = meta["components"]
    if f"dit_{expert}" in comps:
        return f"dit_{expert}"
    if "dit" in comps:
        return "dit"
    raise ValueError(f"checkpoint has no {expert}-noise expert; it holds {sorted(comps)}")


def load_dit_module(path: str | Path, expert: str = "high", dtype=None) -> WanDiT:
    """Restores one expert as an NNX module (params in `dtype`, default: as stored)."""
    path = Path(path)
    meta = checkpoint.read_manifest(path)
    name = component_name(meta, expert)
    cfg = checkpoint.dit_config_from_json(meta["components"][name]["config"])
    d = _dtype(dtype if dtype is not None else meta.get("dtype", "float32"))
    prec = Precision(param_dtype=d, compute_dtype=d)
    abstract = nnx.eval_shape(lambda: WanDiT(cfg, prec, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    flat_abstract = {
        ".".join(map(str, p)): jax.ShapeDtypeStruct(v.shape, v.dtype)
        for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    }
    flat = checkpoint.load_params(path / meta["components"][name]["params"], flat_abstract)
    model = nnx.merge(graphdef, state)
    from wanjax.io.params import load_flat_params

    load_flat_params(model, flat)
    return model


def load_dit(path: str | Path, expert: str = "high", dtype=None) -> DiT:
    """Loads one expert of a converted Wan2.2 checkpoint as a jit-compiled callable.

    `model(latents [B, C, F, H, W], timestep [B], context [B, L, text_dim]) -> velocity [B, C, F,
    H, W]` (float32); `L <= text_len`, zero-padded inside as the official model does. `dtype`
    (float32 | bfloat16) sets the parameter and compute dtype; the official float32 precision
    islands are kept either way.
    """
    return DiT(load_dit_module(path, expert, dtype))
