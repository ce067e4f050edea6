"""`python -m convert.export SRC DST`: a wanjax checkpoint back to the diffusers layout.

Writes `transformer/` (high-noise expert, or the single model) and `transformer_2/` (low-noise
expert), each a `config.json` plus safetensors shards (and an index when there are several) that
`diffusers.WanTransformer3DModel.from_pretrained` loads; with both experts also a minimal
`model_index.json` carrying the boundary. Streams one stored group at a time, in the stored dtype.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from convert import cli, layouts
from convert.atomic import atomic_dir
from convert.errors import UsageError
from convert.keymaps import dit_keymap
from convert.writers import SafetensorsWriter, plan_shards, shard_file_names, write_index
from wanjax.io import checkpoint

FOLDERS = {"dit_high": "transformer", "dit_low": "transformer_2", "dit": "transformer"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_size(text: str) -> int:
    """'5GB', '200MB', '123456' -> bytes (decimal units, like diffusers' max_shard_size)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 200MB)")
    size = int(float(m.group(1)) * _UNITS[m.group(2) and m.group(2).upper()])
    if size < 1:
        raise argparse.ArgumentTypeError(f"a shard holds at least one byte, got {text!r}")
    return size


def _components(meta: dict, expert: str) -> list[str]:
    held = meta["components"]
    if "dit" in held:
        return ["dit"]
    wanted = {"high": ["dit_high"], "low": ["dit_low"], "both": ["dit_high", "dit_low"]}[expert]
    missing = [c for c in wanted if c not in held]
    if missing:
        raise UsageError(f"the checkpoint holds {sorted(held)}, not {', '.join(missing)}")
    return wanted


def _nbytes(leaf: dict) -> int:
    return int(np.prod(leaf["shape"], dtype=np.int64)) * np.dtype(leaf["dtype"]).itemsize


def export_component(src: Path, name: str, meta: dict, folder: Path, max_shard: int, bar) -> None:
    """One DiT as `folder/config.json` plus safetensors shards, one stored group at a time."""
    cfg = checkpoint.dit_config_from_json(meta["components"][name]["config"])
    keymap = dit_keymap(cfg, "diffusers")
    params = src / meta["components"][name]["params"]
    index = checkpoint.read_index(params)
    order = [k for keys in checkpoint.stored_groups(index).values() for k in keys]
    sizes = {k: _nbytes(index[k]) for k in order}
    shards = plan_shards(sizes, max_shard)
    names = shard_file_names(len(shards))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(layouts.dit_config_to_diffusers(cfg), indent=2))
    shard_of = {k: i for i, keys in enumerate(shards) for k in keys}
    weight_map, writer, current = {}, None, -1
    for _, group in checkpoint.iter_param_groups(params):
        for key in sorted(group):
            if shard_of[key] != current:
                if writer is not None:
                    writer.close()
                current = shard_of[key]
                torch_keys = [keymap.by_ours[k].torch_key for k in shards[current]]
                writer = SafetensorsWriter(folder / names[current], torch_keys, {"format": "pt"})
            leaf = keymap.by_ours[key]
            writer.write(leaf.torch_key, leaf.to_torch(group[key]))
            weight_map[leaf.torch_key] = names[current]
            bar.update(sizes[key])
    writer.close()
    if len(shards) > 1:
        write_index(folder, weight_map, sum(sizes.values()))


def export(
    src: str | Path, dst: str | Path, *, expert: str = "both", max_shard_size: int = 5 * 10**9,
    overwrite: bool = False,
) -> Path:
    """Writes the experts of the wanjax checkpoint `src` to `dst` in the diffusers layout."""
    src, dst = Path(src), Path(dst)
    try:
        meta = checkpoint.read_manifest(src)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    names = _components(meta, expert)
    total = sum(meta["components"][n]["bytes"] for n in names)
    with atomic_dir(dst, overwrite=overwrite) as tmp:
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=None) as bar:
            for name in names:
                bar.set_description(name)
                export_component(src, name, meta, tmp / FOLDERS[name], max_shard_size, bar)
        if names == ["dit_high", "dit_low"]:
            model_index = {
                "_class_name": "WanPipeline", "_diffusers_version": "0.35.0",
                "boundary_ratio": meta.get("boundary"),
                "transformer": ["diffusers", "WanTransformer3DModel"],
                "transformer_2": ["diffusers", "WanTransformer3DModel"],
            }
            (tmp / "model_index.json").write_text(json.dumps(model_index, indent=2))
    return dst


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convert.export",
        description=(
            "Write a wanjax checkpoint back to the diffusers layout: transformer/ (high-noise "
            "expert or the single model), transformer_2/ (low-noise expert) and, for both, a "
            "minimal model_index.json. Weights keep their stored dtype."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="wanjax checkpoint directory (has wanjax.json)")
    parser.add_argument("dst", metavar="DST", help="output directory (must not exist)")
    parser.add_argument(
        "--expert", choices=("high", "low", "both"), default="both",
        help="which A14B expert(s) to write; a single-model checkpoint always writes transformer/",
    )
    parser.add_argument(
        "--max-shard-size", type=parse_size, default="5GB",
        help="largest safetensors shard (e.g. 5GB, 200MB); bigger models get an index json",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(
        lambda: export(
            args.src, args.dst, expert=args.expert, max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
