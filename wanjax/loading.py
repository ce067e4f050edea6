"""Loading models from a converted checkpoint folder: the DiT experts, the text encoder, the VAE.

`load_dit` gives a compiled, callable DiT expert; `load_dit_module`, `load_text_encoder` and
`load_vae` give the NNX modules; `tokenizer_path` the tokenizer folder copied next to them.

A converted folder (`python -m convert.wan`) is restored leaf by leaf straight into each
parameter's sharding, into a module built abstractly (no random initialisation). An unconverted
Hugging Face snapshot (official or diffusers layout) or a single `.safetensors` file also loads,
converted in host memory on the way: fine for small models; convert large ones once instead.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from wanjax.config import Precision
from wanjax.io import checkpoint
from wanjax.io.params import load_flat_params
from wanjax.models.dit import WanDiT
from wanjax.models.runner import DiT
from wanjax.models.umt5 import UMT5Encoder, umt5_config_from_json
from wanjax.models.vae import VAEConfig, WanVAE
from wanjax.parallel.rules import param_shardings

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


# family (as the manifest names it) -> (config from its json, module class(cfg, prec, rngs=...))
_FAMILIES = {
    "dit": (checkpoint.dit_config_from_json, WanDiT),
    "umt5": (umt5_config_from_json, UMT5Encoder),
    "vae": (VAEConfig.from_json, WanVAE),
}


def component_name(meta: Mapping, expert: str) -> str:
    """The manifest component holding `expert` ('high' | 'low'); single-model folders hold `dit`."""
    return _expert_component(meta["components"], expert)


def _expert_component(names: Collection[str], expert: str) -> str:
    if expert not in ("high", "low"):
        raise ValueError(f"expert must be 'high' or 'low', got {expert!r}")
    if f"dit_{expert}" in names:
        return f"dit_{expert}"
    if "dit" in names:
        return "dit"
    raise ValueError(f"checkpoint has no {expert}-noise expert; it holds {sorted(names)}")


def _named(name: str, what: str) -> Callable[[Collection[str]], str]:
    def pick(names: Collection[str]) -> str:
        if name not in names:
            raise ValueError(f"checkpoint has no {what}; it holds {sorted(names)}")
        return name

    return pick


def _by_name(state: nnx.State) -> dict[str, nnx.Variable]:
    """A state's variables keyed by their dotted path, as checkpoints name them."""
    return {".".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}


def _module(family: str, cfg, d: jnp.dtype, restore, mesh: Mesh | None = None) -> nnx.Module:
    """Builds the model without allocating random weights, then fills it from `restore`.

    With a `mesh`, every leaf is asked for in its sharding by the rules (`param_shardings`), so
    a device only ever holds its own shards: a 14B expert never lands whole on device 0.
    """
    _, cls = _FAMILIES[family]
    abstract = nnx.eval_shape(lambda: cls(cfg, Precision(d, d), rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    params = _by_name(nnx.state(abstract, nnx.Param))
    shardings = {} if mesh is None else _by_name(param_shardings(abstract, mesh))
    flat_abstract = {
        name: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[name].get_value()
                                   if name in shardings else None)
        for name, v in params.items()
    }
    model = nnx.merge(graphdef, state)
    load_flat_params(model, restore(flat_abstract))
    return model


def _from_source(path: Path, pick, dtype, mesh: Mesh | None) -> nnx.Module | None:
    """Converts one component of an unconverted snapshot in memory; None if `path` is not one."""
    from convert import components, layouts, streaming
    from convert.errors import ConversionError

    try:
        snapshot = layouts.detect(path)
    except ConversionError:
        return None
    found = {c.name: (c, loc) for c, loc in components.found(snapshot) if c.family is not None}
    component, location = found[pick(found)]
    with components.open_source(location) as source:
        plan = streaming.plan(component, location, source, snapshot)
        d = _dtype(dtype if dtype is not None else "float32")
        flat = streaming.read_flat(plan, streaming.DTYPES["bf16" if d == jnp.bfloat16 else "fp32"])

    def placed(abstract):  # host arrays: placed leaf by leaf where the mesh wants them
        return {k: v if abstract[k].sharding is None else jax.device_put(v, abstract[k].sharding)
                for k, v in flat.items()}

    return _module(component.family.name, plan.config, d, placed, mesh)


def _load(path: str | Path, pick: Callable[[Collection[str]], str], dtype,
          mesh: Mesh | None = None) -> nnx.Module:
    """The component `pick(names)` of a converted checkpoint (or unconverted snapshot)."""
    path = Path(path)
    if not (path / checkpoint.MANIFEST).is_file() and path.exists():
        module = _from_source(path, pick, dtype, mesh)
        if module is not None:
            return module
    meta = checkpoint.read_manifest(path)
    entry = meta["components"][pick(meta["components"])]
    family = entry.get("family", "dit")
    cfg = _FAMILIES[family][0](entry["config"])
    stored = entry.get("dtype", meta.get("dtype", "float32"))
    d = _dtype(dtype if dtype is not None else stored)
    params = path / entry["params"]
    return _module(family, cfg, d, lambda abstract: checkpoint.load_params(params, abstract), mesh)


def load_dit_module(path: str | Path, expert: str = "high", dtype=None,
                    mesh: Mesh | None = None) -> WanDiT:
    """Restores one expert as an NNX module (params in `dtype`, default: as stored), each
    parameter straight into its sharding on `mesh` when one is given."""
    return _load(path, lambda names: _expert_component(names, expert), dtype, mesh)


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


def load_text_encoder(path: str | Path, dtype=None) -> UMT5Encoder:
    """The umT5 text encoder of a checkpoint: `encoder(ids [B, L], mask [B, L]) -> [B, L, d]`.

    `path` as for `load_dit`. `dtype` (float32 | bfloat16) sets the parameter and compute dtype
    (default: as stored; the official pipeline runs the encoder in bfloat16). Wrap it in
    `wanjax.text.encode.TextEncoder` for a compiled, input-checked callable.
    """
    return _load(path, _named("text_encoder", "text encoder"), dtype)


def load_vae(path: str | Path, dtype=None) -> WanVAE:
    """The Wan VAE of a checkpoint (`encode`/`decode`, normalised latents, and `_raw` forms).

    `path` as for `load_dit`. `dtype` (float32 | bfloat16) sets the parameter and compute dtype
    (default: as stored, float32 as the converter writes it and the official pipeline runs it).
    """
    return _load(path, _named("vae", "VAE"), dtype)


def tokenizer_path(path: str | Path) -> Path | None:
    """The umT5 tokenizer folder of a checkpoint (for `wanjax.text.tokenizer.Tokenizer`).

    A converted checkpoint holds a copy at `tokenizer/` when its source had one; an unconverted
    snapshot has it at `google/umt5-xxl/` (official) or `tokenizer/` (diffusers). None if absent.
    """
    path = Path(path)
    if not (path / checkpoint.MANIFEST).is_file() and path.exists():
        from convert import layouts, tokenizer
        from convert.errors import ConversionError

        try:
            return tokenizer.locate(layouts.detect(path))
        except ConversionError:
            return None
    entry = checkpoint.read_manifest(path).get("tokenizer")
    return path / entry["path"] if entry else None
