"""Converts a source snapshot into a wanjax checkpoint directory, all or nothing.

Everything is checked from file headers first (layout, keys, shapes). The output is then written
into a temporary directory next to DST, which is renamed to DST only when every component and the
manifest are complete; on any error the temporary directory is removed.

Components: the DiT expert(s), the umT5 text encoder and the VAE, whichever the snapshot holds
(`convert.components`), plus a copy of the tokenizer files (`convert.tokenizer`).
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from convert import components, hub, layouts, streaming, tokenizer
from convert.atomic import atomic_dir
from convert.errors import UsageError
from wanjax.io import checkpoint

CONVERTER = "convert.wan 1"


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    layout: str = "auto",
    dtype: str = "bf16",
    overwrite: bool = False,
    compress: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Converts `src` (snapshot dir, single file, or HF repo id) to `dst`; returns the manifest."""
    if dtype not in streaming.DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose one of {sorted(streaming.DTYPES)}")
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst} already exists; pass --overwrite to replace it")
    root = hub.resolve(src)
    if dst.exists() and dst.resolve() == root.resolve():
        raise UsageError("DST must differ from SRC")
    snapshot = layouts.detect(root, layout)
    todo = []
    for component, location in components.found(snapshot):
        if component.family is None:
            log(f"note: skipping {component.name} ({location.name}): no converter for it yet")
        else:
            todo.append((component, location))
    tokenizer_folder = tokenizer.locate(snapshot)
    if tokenizer_folder is not None:
        tokenizer.files(tokenizer_folder)  # checked before anything is written
    elif any(c.name == "text_encoder" for c, _ in todo):
        log(
            f"note: {snapshot.root} has a text encoder but no tokenizer "
            f"({tokenizer.LOCATIONS[snapshot.layout]}/); the checkpoint will have none either"
        )
    with contextlib.ExitStack() as stack:
        plans = []
        for component, location in todo:
            source = stack.enter_context(components.open_source(location))
            plans.append(streaming.plan(component, location, source, snapshot))
        with atomic_dir(dst, overwrite=overwrite) as tmp:
            manifest = _write(plans, snapshot, src, tmp, dtype, compress)
            if tokenizer_folder is not None:
                manifest["tokenizer"] = tokenizer.copy(
                    tokenizer_folder, tmp, snapshot.relative(tokenizer_folder)
                )
            checkpoint.write_manifest(tmp, manifest)
            manifest = checkpoint.read_manifest(tmp)
    written = [p.component.name for p in plans] + ["tokenizer"] * ("tokenizer" in manifest)
    log(f"wrote {dst} ({', '.join(written)}, {manifest['dtype']})")
    return manifest


def _write(plans, snapshot, src, tmp: Path, dtype_name: str, compress: bool) -> dict:
    """Writes every component's params; returns the manifest (not yet written)."""
    meta_components = {}
    total = sum(p.source_bytes for p in plans)
    done_tensors, all_tensors = 0, sum(p.num_tensors for p in plans)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=None) as bar:

        def on_tensor(nbytes: int) -> None:
            nonlocal done_tensors
            done_tensors += 1
            bar.set_postfix_str(f"{done_tensors}/{all_tensors} tensors", refresh=False)
            bar.update(nbytes)

        for plan in plans:
            name = plan.component.name
            dtype = streaming.DTYPES[plan.component.family.dtype or dtype_name]
            bar.set_description(name)
            with checkpoint.ParamWriter(tmp / name, compress=compress) as writer:
                summary = streaming.convert_component(plan, writer, dtype, on_tensor)
            meta_components[name] = {
                "family": plan.component.family.name,
                "dtype": dtype.name,
                "config": plan.component.family.config_to_json(plan.config),
                "params": name,
                **summary,
                "source": {
                    "path": snapshot.relative(plan.location),
                    "files": plan.source.file_summaries(
                        snapshot.root if snapshot.root.is_dir() else snapshot.root.parent
                    ),
                },
            }
    meta = {
        "dtype": streaming.DTYPES[dtype_name].name,
        "components": meta_components,
        "provenance": {
            "source": str(src),
            "layout": snapshot.layout,
            "single_file": snapshot.single_file,
            "converter": CONVERTER,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "fingerprint": "file sizes and safetensors header sha256 (data is not hashed)",
        },
    }
    boundary = layouts.boundary(snapshot)
    if boundary is not None and {"dit_high", "dit_low"} <= set(meta_components):
        meta["boundary"] = boundary
    return meta
