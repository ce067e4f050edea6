"""`load_dit`: from a converted checkpoint folder to a compiled, callable DiT expert.

A converted folder (`python -m convert.wan`) is restored leaf by leaf straight into each
parameter's sharding. An unconverted Hugging Face snapshot (official or diffusers layout) or a
single `.safetensors` file also loads, converted in host memory on the way: fine for small
models; convert large ones once instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from wanjax.config import DiTConfig, Precision
from wanjax.io import checkpoint
from wanjax.io.params import load_flat_params
from wanjax.models.dit import WanDiT
from wanjax.models.runner import DiT

_DTYPES = {
    "float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16,
}


def _dtype(dtype) -> jnp.dtype:
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
        return jnp.dtype(_DTYPES[dtype])
    d = jnp.dtype(dtype)
    if d not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"dtype must be float32 or bfloat16, got {d}")
    return d


def component_name(meta: Mapping, expert: str) -> str:
    """The manifest component holding `expert` ('high' | 'low'); single-model folders hold `dit`."""
    return _expert_component(meta["components"], expert)


def _expert_component(names, expert: str) -> str:
    if expert not in ("high", "low"):
        raise ValueError(f"expert must be 'high' or 'low', got {expert!r}")
    if f"dit_{expert}" in names:
        return f"dit_{expert}"
    if "dit" in names:
        return "dit"
    raise ValueError(f"checkpoint has no {expert}-noise expert; it holds {sorted(names)}")


def _module(cfg: DiTConfig, d: jnp.dtype, restore) -> WanDiT:
    """Builds the expert without allocating random weights, then fills it from `restore`."""
    prec = Precision(param_dtype=d, compute_dtype=d)
    abstract = nnx.eval_shape(lambda: WanDiT(cfg, prec, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    flat_abstract = {
        ".".join(map(str, p)): jax.ShapeDtypeStruct(v.shape, v.dtype)
        for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    }
    model = nnx.merge(graphdef, state)
    load_flat_params(model, restore(flat_abstract))
    return model


def _from_source(path: Path, expert: str, dtype) -> WanDiT | None:
    """Converts an unconverted snapshot in memory; None if `path` is not one."""
    from convert import components, layouts, streaming
    from convert.errors import ConversionError

    try:
        snapshot = layouts.detect(path)
    except ConversionError:
        return None
    found = {c.name: (c, loc) for c, loc in components.found(snapshot) if c.family is not None}
    component, location = found[_expert_component(found, expert)]
    with components.open_source(location) as source:
        plan = streaming.plan(component, location, source, snapshot)
        d = _dtype(dtype if dtype is not None else "float32")
        flat = streaming.read_flat(plan, streaming.DTYPES["bf16" if d == jnp.bfloat16 else "fp32"])
    return _module(plan.config, d, lambda abstract: flat)


def load_dit_module(path: str | Path, expert: str = "high", dtype=None) -> WanDiT:
    """Restores one expert as an NNX module (params in `dtype`, default: as stored)."""
    path = Path(path)
    if not (path / checkpoint.MANIFEST).is_file() and path.exists():
        module = _from_source(path, expert, dtype)
        if module is not None:
            return module
    meta = checkpoint.read_manifest(path)
    name = component_name(meta, expert)
    cfg = checkpoint.dit_config_from_json(meta["components"][name]["config"])
    d = _dtype(dtype if dtype is not None else meta.get("dtype", "float32"))
    params = path / meta["components"][name]["params"]
    return _module(cfg, d, lambda abstract: checkpoint.load_params(params, abstract))


def load_dit(path: str | Path, expert: str = "high", dtype=None) -> DiT:
    """Loads one expert of a Wan2.2 checkpoint as a jit-compiled callable.

    `path` is a converted checkpoint (`python -m convert.wan`), or an unconverted snapshot or
    `.safetensors` file, converted in memory (default dtype float32 then).
    `model(latents [B, C, F, H, W], timestep [B], context [B, L, text_dim]) -> velocity [B, C, F,
    H, W]` (float32); `L <= text_len`, zero-padded inside as the official model does. `dtype`
    (float32 | bfloat16) sets the parameter and compute dtype; the official float32 precision
    islands are kept either way.
    """
    return DiT(load_dit_module(path, expert, dtype))
