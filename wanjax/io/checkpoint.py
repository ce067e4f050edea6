"""The on-disk model format: `wanjax.json`, and per component one small orbax checkpoint per group.

    DST/wanjax.json               format, version, dtype, per-component config, provenance
    DST/dit_high/index.json       every leaf: its group, shape and dtype
    DST/dit_high/blocks.0/        an orbax PyTree checkpoint of the leaves `blocks.0.*`
    DST/dit_high/blocks.1/        ...
    DST/dit_high/time_projection/ ... (one group per top-level module, and per layer of a stack)
    DST/dit_low/                  the low-noise expert (A14B); a single model has `dit` instead
    DST/text_encoder/             the umT5 encoder, DST/vae/ the VAE (float32), when the source
                                  has them; each component's `family` in `wanjax.json` says which
    DST/tokenizer/                the tokenizer files as copied (listed under `tokenizer`)

Why groups: one A14B expert is 57 GB in float32. Writing it as a single orbax save needs the whole
tree in host memory; orbax's experimental partial save avoids that but is an order of magnitude
slower per call. So a component is written group by group with the stable `PyTreeCheckpointer`,
and a group is one layer of a stack (`blocks.N`) or one top-level module: the converter holds one
group (one DiT block: 0.7 GB in bf16) at a time. Each group directory is a plain orbax checkpoint,
so orbax tools read it directly; `index.json` lists the leaves so nothing else must be scanned.

Loading (`load_params`) restores each group with `ArrayRestoreArgs(sharding=...)` taken from the
abstract tree: orbax/tensorstore read the slices each device needs and place every leaf directly
with its sharding, with no full host copy of the model.

Everything that loads models (`load_dit`, sampling, training) goes through here.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from wanjax.config import DiTConfig

FORMAT = "wanjax"
VERSION = 2
MANIFEST = "wanjax.json"
INDEX = "index.json"
CHUNK_BYTES = 64 << 20  # storage chunk bound: sharded restores read only the chunks they need
_LAYER_INDEX = re.compile(r"^\d+$")


def nest(flat: Mapping[str, Any]) -> dict:
    """`{'a.b': x}` -> `{'a': {'b': x}}`."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Inverse of `nest`."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def dit_config_to_json(cfg: DiTConfig) -> dict:
    return dataclasses.asdict(cfg)


def dit_config_from_json(d: Mapping[str, Any]) -> DiTConfig:
    fields = {f.name for f in dataclasses.fields(DiTConfig)}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
    return DiTConfig(**kwargs)


def read_manifest(path: str | Path) -> dict:
    """Reads and validates `wanjax.json`; FileNotFoundError/ValueError with a clear message."""
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{path} is not a wanjax checkpoint (no {MANIFEST}); convert a Hugging Face snapshot "
            f"first with `python -m convert.wan SRC {path}`"
        )
    try:
        meta = json.loads(manifest.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{manifest} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{manifest}: unsupported format {meta.get('format')!r} v{meta.get('version')} "
            f"(this wanjax reads {FORMAT!r} v{VERSION}; re-convert with `python -m convert.wan`)"
        )
    return meta


def write_manifest(path: str | Path, meta: Mapping[str, Any]) -> None:
    body = {"format": FORMAT, "version": VERSION, **meta}
    (Path(path) / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=True))


def group_of(key: str) -> str:
    """The group a leaf is stored in: its path up to the first layer index, else its first part.

    `blocks.7.ffn.fc1.kernel` -> `blocks.7`; `time_projection.kernel` -> `time_projection`.
    """
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if _LAYER_INDEX.match(part):
            return ".".join(parts[: i + 1])
    return parts[0]


# Saves are synchronous and nothing mutates the arrays meanwhile, so orbax's defensive copy of
# every host array (`deepcopy_host_arrays`) would only double the memory and time of a group.
_HOST_ARRAYS = ocp.type_handlers.create_type_handler_registry(
    (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
    (jax.Array, ocp.type_handlers.get_type_handler(jax.Array)),
)


class ParamWriter:
    """Writes one component's params group by group, holding only the group being written.

    Use as a context manager; `index.json` is written on a clean exit, so a directory without it
    is incomplete.
    """

    def __init__(self, path: str | Path, *, compress: bool = False):
        self.path = Path(path).absolute()
        self.path.mkdir(parents=True, exist_ok=False)
        self.compress = compress
        self.leaves: dict[str, dict] = {}

    def write_group(self, name: str, flat: Mapping[str, np.ndarray | jax.Array]) -> None:
        """Saves `flat` (`path -> array`, all leaves of group `name`) as one orbax checkpoint."""
        stray = sorted(k for k in flat if group_of(k) != name)
        if stray:
            raise ValueError(f"leaves {stray[:4]} do not belong to group {name!r}")
        taken = sorted(k for k in flat if k in self.leaves)
        if taken:
            raise ValueError(f"leaves {taken[:4]} were already written")
        host = {k: np.asarray(v) for k, v in flat.items()}  # device arrays come to the host
        save_args = {k: ocp.SaveArgs(chunk_byte_size=CHUNK_BYTES) for k in host}
        handler = ocp.PyTreeCheckpointHandler(
            use_compression=self.compress, type_handler_registry=_HOST_ARRAYS
        )
        try:
            with ocp.Checkpointer(handler) as ckptr:
                ckptr.save(self.path / name, args=ocp.args.PyTreeSave(nest(host), nest(save_args)))
        except Exception as e:  # tensorstore reports disk-full and permission errors as ValueError
            code = e.errno if isinstance(e, OSError) and e.errno else errno.EIO
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise OSError(code, f"cannot write {self.path / name}: {reason}") from e
        for k, v in host.items():
            self.leaves[k] = {"group": name, "shape": list(v.shape), "dtype": v.dtype.name}

    def close(self) -> None:
        lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(self.leaves.items())]
        (self.path / INDEX).write_text('{"leaves": {\n' + ",\n".join(lines) + "\n}}\n")

    def __enter__(self) -> ParamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def save_params(path: str | Path, flat: Mapping[str, np.ndarray | jax.Array]) -> None:
    """Writes one component's params (flat `path -> array`) at `path`, group by group."""
    groups: dict[str, dict] = {}
    for key, value in flat.items():
        groups.setdefault(group_of(key), {})[key] = value
    with ParamWriter(path) as writer:
        for name, leaves in groups.items():
            writer.write_group(name, leaves)


def read_index(path: str | Path) -> dict[str, dict]:
    """`leaf path -> {'group', 'shape', 'dtype'}` of a component written by `ParamWriter`."""
    index = Path(path) / INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{path} holds no converted params ({INDEX} missing or incomplete)")
    return json.loads(index.read_text())["leaves"]


def stored_groups(index: Mapping[str, dict]) -> dict[str, list[str]]:
    """`group -> leaves` of a `read_index` result, in the order `iter_param_groups` yields them."""
    groups: dict[str, list[str]] = {}
    for key in sorted(index):
        groups.setdefault(index[key]["group"], []).append(key)
    return groups


def _check_keys(path, stored, wanted) -> None:
    missing = sorted(set(wanted) - set(stored))
    unknown = sorted(set(stored) - set(wanted))
    if missing or unknown:
        raise ValueError(
            f"{path}: stored params do not match the model: missing {missing[:8]}, "
            f"unexpected {unknown[:8]}"
        )


def load_params(path: str | Path, abstract_flat: Mapping[str, jax.ShapeDtypeStruct]) -> dict:
    """Restores a component to the shapes, dtypes and shardings of `abstract_flat`.

    A leaf whose `ShapeDtypeStruct` has no sharding goes to the first device. Shapes must match
    what is stored; dtypes are cast on restore.
    """
    path = Path(path).absolute()
    stored = read_index(path)
    _check_keys(path, stored, abstract_flat)
    for key, spec in abstract_flat.items():
        if tuple(stored[key]["shape"]) != tuple(spec.shape):
            raise ValueError(
                f"{path}: {key} is stored with shape {tuple(stored[key]['shape'])}, "
                f"the model expects {tuple(spec.shape)}"
            )
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    out = {}
    with ocp.PyTreeCheckpointer() as ckptr:
        for name, keys in stored_groups(stored).items():
            item = {k: abstract_flat[k] for k in keys}
            restore_args = {
                k: ocp.ArrayRestoreArgs(
                    sharding=getattr(s, "sharding", None) or default,
                    global_shape=tuple(s.shape),
                    dtype=s.dtype,
                )
                for k, s in item.items()
            }
            tree = ckptr.restore(
                path / name,
                args=ocp.args.PyTreeRestore(item=nest(item), restore_args=nest(restore_args)),
            )
            out.update(flatten(tree))
    return out


def iter_param_groups(path: str | Path) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Yields `(group, {leaf: host array})` one group at a time, as stored (for export)."""
    path = Path(path).absolute()
    stored = read_index(path)
    with ocp.PyTreeCheckpointer() as ckptr:
        for name, keys in stored_groups(stored).items():
            item = {k: np.zeros((), stored[k]["dtype"]) for k in keys}
            restore_args = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in keys}
            tree = ckptr.restore(
                path / name,
                args=ocp.args.PyTreeRestore(item=nest(item), restore_args=nest(restore_args)),
            )
            yield name, flatten(tree)
