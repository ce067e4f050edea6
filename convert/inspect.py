"""`python -m convert.inspect PATH`: what a checkpoint holds, from metadata only (no tensor data).

PATH may be a converted wanjax checkpoint (reads `wanjax.json` and each component's index) or a
source snapshot or file in either Wan2.2 layout (reads safetensors headers; a `.pth` text encoder
or VAE is opened memory-mapped). Both list the DiT expert(s), the text encoder, the VAE and the
tokenizer files that are present.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

from convert import cli, components, layouts, tokenizer
from convert.errors import ConversionError, UsageError
from wanjax.io import checkpoint


def _size(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1000
    raise AssertionError


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _dtypes(counter: collections.Counter) -> str:
    return ", ".join(f"{d} x{n}" for d, n in counter.most_common())


def _summary(family: str, cfg) -> str:
    """The config in a few words."""
    if family == "dit":
        return (
            f"dim {cfg.dim}, {cfg.num_layers} layers, {cfg.num_heads} heads, ffn {cfg.ffn_dim}, "
            f"in/out {cfg.in_dim}/{cfg.out_dim}, text {cfg.text_dim}"
        )
    if family == "umt5":
        return (
            f"umT5 d_model {cfg.d_model}, {cfg.num_layers} layers, {cfg.num_heads} heads, "
            f"ffn {cfg.d_ff}, vocab {cfg.vocab_size}"
        )
    if family == "vae":
        version = "Wan2.2" if cfg.residual else "Wan2.1"
        return (
            f"{version} VAE, base_dim {cfg.base_dim}, z_dim {cfg.z_dim}, "
            f"x{cfg.spatial_factor} space, x4 time"
        )
    return ""


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def describe_checkpoint(path: Path) -> list[str]:
    meta = checkpoint.read_manifest(path)
    prov = meta.get("provenance", {})
    lines = [
        f"wanjax checkpoint {path} (format v{meta['version']}, stored as {meta['dtype']})",
        f"source: {prov.get('source', '?')} ({prov.get('layout', '?')} layout), converted "
        f"{prov.get('date', '?')} by {prov.get('converter', '?')}",
    ]
    if "boundary" in meta:
        b = meta["boundary"]
        lines.append(f"experts switch at t >= {b * 1000:g} (boundary {b})")
    rows = [["component", "params", "bytes", "on disk", "tensors", "groups", "dtypes", "config"]]
    for name, comp in meta["components"].items():
        index = checkpoint.read_index(path / comp["params"])
        params = sum(int(np.prod(leaf["shape"], dtype=np.int64)) for leaf in index.values())
        family = components.FAMILIES.get(comp.get("family", "dit"))
        config = family.config_from_json(comp["config"]) if family else None
        rows.append([
            name, f"{params:,}", _size(comp["bytes"]), _size(_disk_bytes(path / comp["params"])),
            str(len(index)), str(len({leaf["group"] for leaf in index.values()})),
            _dtypes(collections.Counter(leaf["dtype"] for leaf in index.values())),
            _summary(family.name, config) if family else "",
        ])
    if "tokenizer" in meta:
        tok = meta["tokenizer"]
        size = _size(sum(f["bytes"] for f in tok["files"]))
        rows.append([
            "tokenizer", "-", size, _size(_disk_bytes(path / tok["path"])), "-", "-", "-",
            f"{len(tok['files'])} files from {tok['source']}",
        ])
    return lines + _table(rows)


def describe_source(path: Path, layout: str) -> list[str]:
    snapshot = layouts.detect(path, layout)
    kind = "single file" if snapshot.single_file else "snapshot"
    lines = [f"{snapshot.layout} {kind} {snapshot.root}"]
    if (b := layouts.boundary(snapshot)) is not None:
        lines.append(f"boundary {b}")
    rows = [["component", "at", "files", "tensors", "params", "bytes", "dtypes"]]
    for component, location in components.found(snapshot):
        at = snapshot.relative(location)
        if component.family is None:
            rows.append([component.name, at, "-", "-", "-", "-", "(no converter yet)"])
            continue
        with components.open_source(location) as source:
            infos = list(source.tensors.values())
            rows.append([
                component.name, at, str(len(source.files)), str(len(infos)),
                f"{sum(int(np.prod(i.shape, dtype=np.int64)) for i in infos):,}",
                _size(sum(i.nbytes for i in infos)),
                _dtypes(collections.Counter(i.dtype.name for i in infos)),
            ])
    folder = tokenizer.locate(snapshot)
    if folder is not None:
        try:
            files = tokenizer.files(folder)
        except ConversionError:
            files = None
        at = snapshot.relative(folder)
        if files is None:
            rows.append(["tokenizer", at, "-", "-", "-", "-", "(no tokenizer files)"])
        else:
            size = _size(sum(f.stat().st_size for f in files))
            rows.append(["tokenizer", at, str(len(files)), "-", "-", size, "-"])
    return lines + _table(rows)


def describe(path: str | Path, layout: str = "auto") -> list[str]:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if (path / checkpoint.MANIFEST).is_file():
        return describe_checkpoint(path)
    return describe_source(path, layout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convert.inspect",
        description=(
            "Print what a checkpoint holds (layout; DiT experts, text encoder, VAE and "
            "tokenizer; parameter counts, dtypes, bytes) from its metadata alone. PATH is a "
            "converted wanjax checkpoint, or a Wan2.2 source snapshot (official or diffusers "
            "layout) or single .safetensors file."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("path", metavar="PATH", help="checkpoint directory or file")
    parser.add_argument(
        "--layout", choices=("auto", "official", "diffusers"), default="auto",
        help="source layout (for unconverted snapshots)",
    )
    args = parser.parse_args(argv)
    return cli.run(lambda: print("\n".join(describe(args.path, args.layout))))


if __name__ == "__main__":
    sys.exit(main())
