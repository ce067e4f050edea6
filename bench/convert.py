"""Conversion throughput and peak memory on a synthetic multi-GB Wan DiT checkpoint.

    python -m bench.convert [--size-gb 2] [--shard-mb 500] [--dtype bf16] [--json [PATH]]

Generates an official-layout checkpoint on the fly (config.json + float32 safetensors shards +
index, TI2V-style at the root; wide layers so there are few, large tensors), converts it with
`python -m convert.wan` in a child process, and reports source MB/s and the child's peak resident
memory (`getrusage(RUSAGE_CHILDREN)`) against the largest shard. The claim checked: peak RSS stays
below 2x the largest shard. A second child restores the result with `load_params` (load MB/s).
Nothing is kept unless `--keep` is given (`--workdir DIR` chooses where). Source files are fresh, so reads mostly hit the
page cache: MB/s measures the converter, not the disk.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from convert.writers import SafetensorsWriter, plan_shards, shard_file_names, write_index

DIM, FFN, TEXT_DIM, FREQ_DIM, IN_DIM = 2048, 8192, 4096, 256, 16
_BLOCK = 16 * DIM * DIM + 4 * DIM * 4 + FFN  # params per block, roughly


def official_shapes(num_layers: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and PyTorch shapes of an official `WanModel` (spec section 3.1)."""
    d = DIM
    shapes = {
        "patch_embedding.weight": (d, IN_DIM, 1, 2, 2), "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, TEXT_DIM), "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d), "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, FREQ_DIM), "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d), "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d), "time_projection.1.bias": (6 * d,),
        "head.modulation": (1, 2, d), "head.head.weight": (IN_DIM * 4, d),
        "head.head.bias": (IN_DIM * 4,),
    }
    for i in range(num_layers):
        b = f"blocks.{i}"
        shapes[f"{b}.modulation"] = (1, 6, d)
        for attn in ("self_attn", "cross_attn"):
            for p in "qkvo":
                shapes[f"{b}.{attn}.{p}.weight"] = (d, d)
                shapes[f"{b}.{attn}.{p}.bias"] = (d,)
            for p in "qk":
                shapes[f"{b}.{attn}.norm_{p}.weight"] = (d,)
        shapes[f"{b}.norm3.weight"] = shapes[f"{b}.norm3.bias"] = (d,)
        shapes[f"{b}.ffn.0.weight"], shapes[f"{b}.ffn.0.bias"] = (FFN, d), (FFN,)
        shapes[f"{b}.ffn.2.weight"], shapes[f"{b}.ffn.2.bias"] = (d, FFN), (d,)
    return dict(sorted(shapes.items()))


def make_checkpoint(root: Path, size_bytes: int, shard_bytes: int) -> dict:
    """Writes the synthetic checkpoint; returns its shape facts."""
    num_layers = max(1, round((size_bytes / 4 - 11 * DIM * DIM) / _BLOCK))
    shapes = official_shapes(num_layers)
    sizes = {k: 4 * int(np.prod(s)) for k, s in shapes.items()}
    shards = plan_shards(sizes, shard_bytes)
    names = shard_file_names(len(shards))
    pattern = (np.random.default_rng(0).standard_normal(1 << 20) * 0.02).astype(np.float32)
    root.mkdir(parents=True)
    weight_map = {}
    for name, keys in zip(names, shards, strict=True):
        with SafetensorsWriter(root / name, keys, {"format": "pt"}) as writer:
            for k in keys:
                writer.write(k, np.resize(pattern, shapes[k]))
                weight_map[k] = name
    write_index(root, weight_map, sum(sizes.values()))
    config = {
        "_class_name": "WanModel", "dim": DIM, "ffn_dim": FFN, "num_heads": DIM // 128,
        "num_layers": num_layers, "in_dim": IN_DIM, "out_dim": IN_DIM, "freq_dim": FREQ_DIM,
        "text_len": 512, "eps": 1e-6, "model_type": "t2v",
    }
    (root / "config.json").write_text(json.dumps(config))
    return {
        "source_bytes": sum(sizes.values()),
        "shards": len(shards),
        "largest_shard_bytes": max((root / n).stat().st_size for n in names),
        "largest_tensor_bytes": max(sizes.values()),
        "num_layers": num_layers,
    }


_LOAD = """
import json, resource, sys, time
import jax
from wanjax.io import checkpoint
path = sys.argv[1]
index = checkpoint.read_index(path)
abstract = {k: jax.ShapeDtypeStruct(tuple(v["shape"]), v["dtype"]) for k, v in index.items()}
t = time.perf_counter()
flat = checkpoint.load_params(path, abstract)
jax.block_until_ready(flat)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""
_BASELINE = (
    "import resource, convert.snapshot;"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
)


def run(size_gb: float, shard_mb: float, dtype: str, workdir: Path) -> dict:
    src, dst = workdir / "source", workdir / "converted"
    facts = make_checkpoint(src, int(size_gb * 1e9), int(shard_mb * 1e6))
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "convert.wan", str(src), str(dst), "--dtype", dtype],
        check=True, stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t
    # The conversion is this process's first child, so this is its peak.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    baseline = int(subprocess.run(
        [sys.executable, "-c", _BASELINE], check=True, capture_output=True, text=True
    ).stdout)
    load = json.loads(subprocess.run(
        [sys.executable, "-c", _LOAD, str(dst / "dit")], check=True, capture_output=True,
        text=True,
    ).stdout)
    out_bytes = json.loads((dst / "wanjax.json").read_text())["components"]["dit"]["bytes"]
    return {
        **facts,
        "dtype": dtype,
        "convert_seconds": seconds,
        "convert_mb_per_s": facts["source_bytes"] / 1e6 / seconds,
        "peak_rss_bytes": peak,
        "import_rss_bytes": baseline,
        "peak_over_largest_shard": peak / facts["largest_shard_bytes"],
        "output_bytes": out_bytes,
        "load_seconds": load["seconds"],
        "load_mb_per_s": out_bytes / 1e6 / load["seconds"],
        "load_peak_rss_bytes": load["peak_rss_bytes"],
    }


def print_table(r: dict) -> None:
    def mb(key: str) -> str:
        return f"{r[key] / 1e6:,.0f} MB"

    rows = [
        ("source (float32)", f"{mb('source_bytes')} in {r['shards']} shards, "
                             f"{r['num_layers']} blocks of dim {DIM}"),
        ("largest shard / tensor", f"{mb('largest_shard_bytes')} / {mb('largest_tensor_bytes')}"),
        (f"convert to {r['dtype']}",
         f"{r['convert_seconds']:.1f} s, {r['convert_mb_per_s']:.0f} MB/s (CLI wall time)"),
        ("peak RSS (convert)", f"{mb('peak_rss_bytes')} = "
                               f"{r['peak_over_largest_shard']:.2f} x largest shard (claim: < 2)"),
        ("RSS after imports only", mb("import_rss_bytes")),
        ("load (restore to device)",
         f"{mb('output_bytes')} in {r['load_seconds']:.1f} s, {r['load_mb_per_s']:.0f} MB/s, "
         f"peak RSS {mb('load_peak_rss_bytes')}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.convert", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size-gb", type=float, default=2.0, help="source size (float32)")
    parser.add_argument("--shard-mb", type=float, default=500.0, help="source shard size")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="output dtype")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate (temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="bare: print one JSON object instead of the table; with PATH: "
                             "print the table and write the results (+ environment) to PATH")
    args = parser.parse_args(argv)
    if args.size_gb <= 0 or args.shard_mb <= 0:
        parser.error("--size-gb and --shard-mb must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="bench_convert_", dir=args.workdir))
    try:
        result = run(args.size_gb, args.shard_mb, args.dtype, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json == "-":
        print(json.dumps(result))
        return 0
    print_table(result)
    if args.json:
        from bench.results import write_json

        write_json(args.json, "bench.convert", [result], args, claim_max_peak_over_shard=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
