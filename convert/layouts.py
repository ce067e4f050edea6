"""What a source checkpoint is: its layout, its weight files, and the model config it implies.

Two layouts (spec section 3), named by their key naming:
- `official` (`Wan-AI/Wan2.2-T2V-A14B`): `high_noise_model/` + `low_noise_model/`, or `config.json`
  with the shards at the root (TI2V-5B); configs hold `dim`, `num_heads`, ... (`WanModel`).
- `diffusers` (`...-Diffusers`): `model_index.json`, `transformer/` (+ `transformer_2/` for the
  low-noise expert); configs hold `num_attention_heads`, ... (`WanTransformer3DModel`).
A single checkpoint file (ComfyUI style, keys maybe prefixed `model.diffusion_model.`) is a
`Snapshot` with `single_file=True`; its naming and config come from its tensor names and shapes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from convert.errors import ConversionError
from convert.readers import TensorSource
from wanjax.config import DiTConfig

LAYOUTS = ("official", "diffusers")
SINGLE_FILE_PREFIX = "model.diffusion_model."
WAN_HEAD_DIM = 128  # every released Wan DiT; a single file without config cannot tell otherwise
# Official A14B boundaries live in code (wan/configs/wan_{t2v,i2v}_A14B.py), keyed by model_type.
OFFICIAL_BOUNDARY = {"t2v": 0.875, "i2v": 0.900}


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A source checkpoint: a snapshot directory, or one checkpoint file."""

    root: Path
    layout: str  # key naming: "official" | "diffusers"
    single_file: bool = False

    def relative(self, location: Path) -> str:
        """`location` as shown to users: its path under the root, or its name."""
        if location == self.root or not location.is_relative_to(self.root):
            return location.name
        return location.relative_to(self.root).as_posix()


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path} does not hold a JSON object")
    return value


def _class_name(config: Path) -> str | None:
    return read_json(config).get("_class_name") if config.is_file() else None


def _official_signals(root: Path) -> list[str]:
    found = [d for d in ("high_noise_model", "low_noise_model") if (root / d).is_dir()]
    config = read_json(root / "config.json") if (root / "config.json").is_file() else {}
    if config.get("_class_name") == "WanModel" or {"dim", "num_layers"} <= set(config):
        found.append("config.json (WanModel)")
    return found


def _diffusers_signals(root: Path) -> list[str]:
    found = [n for n in ("model_index.json",) if (root / n).is_file()]
    found += [d + "/" for d in ("transformer", "transformer_2") if (root / d).is_dir()]
    if _class_name(root / "config.json") == "WanTransformer3DModel":
        found.append("config.json (WanTransformer3DModel)")
    return found


def naming_of(keys) -> str:
    """Which layout's key names `keys` use (prefix already stripped)."""
    keys = set(keys)
    if any(k.startswith("condition_embedder.") for k in keys) or "proj_out.weight" in keys:
        return "diffusers"
    if any(k.startswith(("text_embedding.", "time_embedding.", "head.head")) for k in keys):
        return "official"
    raise ConversionError(
        "cannot tell the layout from the tensor names (neither official `text_embedding.*` nor "
        "diffusers `condition_embedder.*`); pass --layout"
    )


def detect(root: str | Path, layout: str = "auto") -> Snapshot:
    """The layout of `root`; `layout` other than 'auto' overrides detection."""
    root = Path(root)
    if layout not in ("auto", *LAYOUTS):
        raise ValueError(f"unknown layout {layout!r}; choose auto or one of {LAYOUTS}")
    if root.is_file():
        return Snapshot(root, layout if layout != "auto" else _file_naming(root), single_file=True)
    if not root.is_dir():
        raise ConversionError(f"{root} does not exist")
    if (root / "wanjax.json").is_file():
        raise ConversionError(
            f"{root} is already a converted wanjax checkpoint (use `python -m convert.export` "
            f"to write it back to the diffusers layout)"
        )
    if layout != "auto":
        return Snapshot(root, layout)
    official, diffusers = _official_signals(root), _diffusers_signals(root)
    if official and diffusers:
        raise ConversionError(
            f"{root} looks like both layouts (official: {', '.join(official)}; diffusers: "
            f"{', '.join(diffusers)}); pass --layout official or --layout diffusers"
        )
    if official:
        return Snapshot(root, "official")
    if diffusers:
        return Snapshot(root, "diffusers")
    files = sorted(root.glob("*.safetensors"))
    if len(files) == 1 and not any(root.glob("*.index.json")):
        return Snapshot(files[0], _file_naming(files[0]), single_file=True)
    listing = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12])
    raise ConversionError(
        f"{root} is neither an official Wan2.2 snapshot (high_noise_model/, low_noise_model/ or a "
        f"WanModel config.json) nor a diffusers one (model_index.json, transformer/), nor a single "
        f".safetensors file; it holds: {listing or 'nothing'}"
    )


def _file_naming(path: Path) -> str:
    with open_file(path) as source:
        return naming_of(source.keys())


def _without_prefix(paths: list[Path]) -> TensorSource:
    """The tensors of `paths`; a `model.diffusion_model.` prefix on all keys is removed."""
    source = TensorSource(paths)
    keys = source.keys()
    if keys and all(k.startswith(SINGLE_FILE_PREFIX) for k in keys):
        source.close()
        source = TensorSource(paths, strip_prefix=SINGLE_FILE_PREFIX)
    return source


def open_file(path: Path) -> TensorSource:
    """One checkpoint file (ComfyUI-style key prefixes removed)."""
    return _without_prefix([path])


def open_folder(folder: Path) -> TensorSource:
    """The safetensors in `folder`: the shards its index json names, or its single file."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise ConversionError(f"{folder} holds several index files: {[p.name for p in indexes]}")
    if indexes:
        index = read_json(indexes[0])
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConversionError(f"{indexes[0]} has no weight_map")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ConversionError(
                f"{indexes[0]} names {len(missing)} missing shard(s): {', '.join(missing)}"
            )
        return TensorSource([folder / s for s in shards], weight_map)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        others = sorted(p.name for pattern in ("*.bin", "*.pth") for p in folder.glob(pattern))
        hint = f" (found {', '.join(others)}; only safetensors shards are read)" if others else ""
        raise ConversionError(f"{folder} holds no .safetensors weights{hint}")
    return _without_prefix(files)


# --- DiT configs ----------------------------------------------------------------------------------


def _shape(source: TensorSource, key: str) -> tuple[int, ...]:
    if key not in source.tensors:
        raise ConversionError(f"cannot infer the model config: the checkpoint has no tensor {key}")
    return source.tensors[key].shape


_DIT_KEYS = {  # the tensors whose shapes fix the config, per naming
    "official": {
        "patch": "patch_embedding.weight",
        "text": "text_embedding.0.weight",
        "time": "time_embedding.0.weight",
        "ffn": "blocks.0.ffn.0.weight",
        "head": "head.head.weight",
    },
    "diffusers": {
        "patch": "patch_embedding.weight",
        "text": "condition_embedder.text_embedder.linear_1.weight",
        "time": "condition_embedder.time_embedder.linear_1.weight",
        "ffn": "blocks.0.ffn.net.0.proj.weight",
        "head": "proj_out.weight",
    },
}


def _num_layers(source: TensorSource) -> int:
    indices = {int(m.group(1)) for k in source.keys() if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def dit_config_from_shapes(source: TensorSource, layout: str) -> DiTConfig:
    """A config from tensor shapes alone (single files); assumes Wan's head_dim of 128."""
    names = _DIT_KEYS[layout]
    dim, in_dim, *patch = _shape(source, names["patch"])
    head_out = _shape(source, names["head"])[0]
    volume = patch[0] * patch[1] * patch[2]
    if dim % WAN_HEAD_DIM or head_out % volume:
        raise ConversionError(
            f"cannot infer the config: dim {dim} is not a multiple of Wan's head_dim "
            f"{WAN_HEAD_DIM}, or the head width {head_out} does not fit patch {tuple(patch)}"
        )
    return _dit_config(
        dim=dim, ffn_dim=_shape(source, names["ffn"])[0], num_heads=dim // WAN_HEAD_DIM,
        num_layers=_num_layers(source), in_dim=in_dim, out_dim=head_out // volume,
        patch_size=tuple(patch), text_dim=_shape(source, names["text"])[1],
        freq_dim=_shape(source, names["time"])[1],
    )


def dit_config_official(config: dict, source: TensorSource) -> DiTConfig:
    """From an official `config.json`; `text_dim` and `patch_size` are not in it (constructor
    defaults, `ignore_for_config`), so they come from the tensor shapes."""
    names = _DIT_KEYS["official"]
    patch = config.get("patch_size") or _shape(source, names["patch"])[2:]
    return _dit_config(
        dim=config.get("dim"), ffn_dim=config.get("ffn_dim"), num_heads=config.get("num_heads"),
        num_layers=config.get("num_layers"), in_dim=config.get("in_dim", 16),
        out_dim=config.get("out_dim", 16), patch_size=tuple(patch),
        text_len=config.get("text_len", 512), text_dim=_shape(source, names["text"])[1],
        freq_dim=config.get("freq_dim", 256), eps=config.get("eps", 1e-6),
    )


def dit_config_diffusers(config: dict) -> DiTConfig:
    """From a diffusers `WanTransformer3DModel` `config.json` (T2V variants only)."""
    unsupported = {
        "cross_attn_norm": (config.get("cross_attn_norm", True), True),
        "qk_norm": (config.get("qk_norm", "rms_norm_across_heads"), "rms_norm_across_heads"),
        "image_dim": (config.get("image_dim"), None),
        "added_kv_proj_dim": (config.get("added_kv_proj_dim"), None),
    }
    for name, (value, wanted) in unsupported.items():
        if value != wanted:
            raise ConversionError(
                f"unsupported transformer variant: {name}={value!r} (needs {wanted!r})"
            )
    heads, head_dim = config.get("num_attention_heads"), config.get("attention_head_dim")
    return _dit_config(
        dim=heads * head_dim if heads and head_dim else None, ffn_dim=config.get("ffn_dim"),
        num_heads=heads, num_layers=config.get("num_layers"), in_dim=config.get("in_channels", 16),
        out_dim=config.get("out_channels", 16),
        patch_size=tuple(config.get("patch_size", (1, 2, 2))),
        text_dim=config.get("text_dim", 4096), freq_dim=config.get("freq_dim", 256),
        eps=config.get("eps", 1e-6), rope_max_len=config.get("rope_max_seq_len", 1024),
    )


def _dit_config(**fields) -> DiTConfig:
    missing = sorted(k for k, v in fields.items() if v is None)
    if missing:
        raise ConversionError(f"the model config lacks {', '.join(missing)}")
    try:
        return DiTConfig(**fields)
    except (TypeError, ValueError) as e:
        raise ConversionError(f"invalid model config: {e}") from None


def dit_config(location: Path, source: TensorSource, snapshot: Snapshot) -> DiTConfig:
    """The config of the DiT at `location` (a folder with config.json, or a single file)."""
    config_path = location / "config.json" if location.is_dir() else None
    if config_path is None or not config_path.is_file():
        return dit_config_from_shapes(source, snapshot.layout)
    config = read_json(config_path)
    if snapshot.layout == "official":
        return dit_config_official(config, source)
    return dit_config_diffusers(config)


def boundary(snapshot: Snapshot) -> float | None:
    """The A14B expert switch as a fraction of 1000 timesteps, when the snapshot says."""
    if snapshot.single_file:
        return None
    if snapshot.layout == "diffusers":
        index = snapshot.root / "model_index.json"
        return read_json(index).get("boundary_ratio") if index.is_file() else None
    config = snapshot.root / "high_noise_model" / "config.json"
    if not config.is_file():
        return None
    return OFFICIAL_BOUNDARY.get(read_json(config).get("model_type", "t2v"))


def dit_config_to_diffusers(cfg: DiTConfig) -> dict:
    """The `config.json` diffusers' `WanTransformer3DModel.from_pretrained` reads (T2V).

    `text_len` has no diffusers field (the pipeline pads prompts itself) and is dropped.
    """
    if cfg.rope_theta != 10000.0:
        raise ConversionError(f"diffusers fixes rope_theta at 10000, not {cfg.rope_theta}")
    return {
        "_class_name": "WanTransformer3DModel",
        "_diffusers_version": "0.35.0",
        "added_kv_proj_dim": None,
        "attention_head_dim": cfg.head_dim,
        "cross_attn_norm": True,
        "eps": cfg.eps,
        "ffn_dim": cfg.ffn_dim,
        "freq_dim": cfg.freq_dim,
        "image_dim": None,
        "in_channels": cfg.in_dim,
        "num_attention_heads": cfg.num_heads,
        "num_layers": cfg.num_layers,
        "out_channels": cfg.out_dim,
        "patch_size": list(cfg.patch_size),
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": cfg.rope_max_len,
        "text_dim": cfg.text_dim,
    }
