"""The registry of convertible components: where each one lives per layout, and how to convert it.

A `Family` is a kind of model (the DiT, the umT5 text encoder, the VAE): how to read its config,
its `KeyMap`, and the parameter shapes our model expects. A `Component` is one place in a
snapshot holding such a model (`dit_high` is the official `high_noise_model/` or the diffusers
`transformer/`). An entry whose family is None is recognised and skipped with a note.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convert import layouts
from convert.errors import ConversionError
from convert.keymaps import KeyMap, dit_keymap
from convert.layouts import Snapshot
from convert.readers import TensorSource
from wanjax.config import DiTConfig
from wanjax.io import checkpoint


@dataclasses.dataclass(frozen=True)
class Family:
    """A kind of model the converter can map: config, key table and expected shapes."""

    name: str
    read_config: Callable[[Path, TensorSource, Snapshot], Any]
    keymap: Callable[[Any, str], KeyMap]
    shapes: Callable[[Any], dict[str, tuple[int, ...]]]  # our leaf path -> shape
    config_to_json: Callable[[Any], dict]
    config_from_json: Callable[[dict], Any]
    # Checkpoint-name fix-ups before the table applies (tied or unused tensors): returns
    # `name the KeyMap expects -> name in the files`. Default: every tensor as it is.
    select: Callable[[list[str], str], dict[str, str]] | None = None
    # The stored dtype whatever `--dtype` says (a `streaming.DTYPES` name), or None to follow it.
    dtype: str | None = None


def dit_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Our parameter shapes, from `nnx.eval_shape` (no allocation)."""
    from flax import nnx

    from wanjax.models.dit import WanDiT

    abstract = nnx.eval_shape(lambda: WanDiT(cfg, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    return {".".join(map(str, p)): tuple(v.shape) for p, v in flat}


DIT = Family(
    name="dit",
    read_config=layouts.dit_config,
    keymap=dit_keymap,
    shapes=dit_shapes,
    config_to_json=checkpoint.dit_config_to_json,
    config_from_json=checkpoint.dit_config_from_json,
)


def _umt5_family() -> Family:
    from convert import keymaps_umt5 as k
    from wanjax.models import umt5

    return Family("umt5", k.umt5_read_config, k.umt5_keymap, k.umt5_param_shapes,
                  umt5.umt5_config_to_json, umt5.umt5_config_from_json, select=k.umt5_select)


def _vae_family() -> Family:
    from convert import keymaps_vae as k
    from wanjax.models.vae import VAEConfig

    def read_config(location: Path, source: TensorSource, snapshot: Snapshot) -> VAEConfig:
        shapes = {key: t.shape for key, t in source.tensors.items()}
        try:
            return k.read_vae_config(location, shapes, snapshot.layout)
        except ValueError as e:
            raise ConversionError(f"{location}: {e}") from None

    # Stored in float32 whatever `--dtype` says: the official pipeline runs the VAE in float32,
    # and it is small (0.5 GB for Wan2.1, 2.8 GB for Wan2.2).
    return Family("vae", read_config, k.vae_keymap, k.vae_shapes, lambda c: c.to_json(),
                  VAEConfig.from_json, dtype="fp32")


UMT5 = _umt5_family()
VAE = _vae_family()


@dataclasses.dataclass(frozen=True)
class Component:
    """One model in a snapshot: `locate` finds its folder or file, None when absent."""

    name: str
    family: Family | None
    locate: Callable[[Snapshot], Path | None]
    hub_patterns: tuple[str, ...] = ()  # what `snapshot_download` fetches for it


def at(**candidates: tuple[str, ...]) -> Callable[[Snapshot], Path | None]:
    """Locates the first existing path of `candidates[layout]` under the snapshot root."""

    def locate(snapshot: Snapshot) -> Path | None:
        if snapshot.single_file:
            return None
        for rel in candidates.get(snapshot.layout, ()):
            if (snapshot.root / rel).exists():
                return snapshot.root / rel
        return None

    return locate


def dit(name: str) -> Callable[[Snapshot], Path | None]:
    """Locates DiT `name`: `dit_high`/`dit_low` (A14B experts) or `dit` (one model, one file)."""

    def locate(snapshot: Snapshot) -> Path | None:
        if snapshot.single_file:
            return snapshot.root if name == "dit" else None
        return _dit_locations(snapshot).get(name)

    return locate


REGISTRY = (
    Component(
        "dit_high", DIT, dit("dit_high"),
        ("high_noise_model/*", "transformer/*", "model_index.json"),
    ),
    Component("dit_low", DIT, dit("dit_low"), ("low_noise_model/*", "transformer_2/*")),
    Component("dit", DIT, dit("dit"), ("config.json", "diffusion_pytorch_model*")),
    Component(
        "text_encoder", UMT5,
        at(official=("models_t5_umt5-xxl-enc-bf16.pth",), diffusers=("text_encoder",)),
        ("models_t5_umt5-xxl-enc-bf16.pth", "text_encoder/*", "google/umt5-xxl/*", "tokenizer/*"),
    ),
    Component(
        "vae", VAE, at(official=("Wan2.1_VAE.pth", "Wan2.2_VAE.pth"), diffusers=("vae",)),
        ("Wan2.1_VAE.pth", "Wan2.2_VAE.pth", "vae/*"),
    ),
)
BY_NAME = {c.name: c for c in REGISTRY}
FAMILIES = {c.family.name: c.family for c in REGISTRY if c.family is not None}


_UNSET = (None, [None, None])  # how model_index.json marks an absent component


def _dit_locations(snapshot: Snapshot) -> dict[str, Path]:
    """Which DiT components a snapshot holds: two A14B experts, or one model."""
    root = snapshot.root
    if snapshot.layout == "official":
        experts = {"dit_high": root / "high_noise_model", "dit_low": root / "low_noise_model"}
        if any(p.is_dir() for p in experts.values()):
            _require_all(experts)
            return experts
        has_model = (root / "config.json").is_file() or any(root.glob("*.safetensors"))
        return {"dit": root} if has_model else {}
    experts = {"dit_high": root / "transformer", "dit_low": root / "transformer_2"}
    index = root / "model_index.json"
    listed = index.is_file() and layouts.read_json(index).get("transformer_2") not in _UNSET
    if listed or experts["dit_low"].is_dir():
        _require_all(experts, "listed in model_index.json" if listed else "")
        return experts
    if experts["dit_high"].is_dir():
        return {"dit": experts["dit_high"]}
    return {"dit": root} if (root / "config.json").is_file() else {}


def _require_all(experts: dict[str, Path], why: str = "") -> None:
    missing = [p for p in experts.values() if not p.is_dir()]
    if missing:
        present = [p.name for p in experts.values() if p.is_dir()]
        raise ConversionError(
            f"{missing[0].parent} holds {', '.join(present) or 'no expert'} but not "
            f"{', '.join(p.name for p in missing)}{' (' + why + ')' if why else ''}: an A14B "
            f"snapshot needs both experts"
        )


def found(snapshot: Snapshot) -> list[tuple[Component, Path]]:
    """The registry entries present in `snapshot`, in registry order."""
    out = [(c, p) for c in REGISTRY if (p := c.locate(snapshot)) is not None]
    if not any(c.family is not None for c, _ in out):
        raise ConversionError(
            f"{snapshot.root} holds nothing to convert (no transformer, text encoder or VAE)"
        )
    return out


def open_source(location: Path) -> TensorSource:
    return layouts.open_file(location) if location.is_file() else layouts.open_folder(location)


def hub_patterns() -> list[str]:
    """`allow_patterns` for `snapshot_download`: only what the convertible components need."""
    return sorted({p for c in REGISTRY if c.family is not None for p in c.hub_patterns})
