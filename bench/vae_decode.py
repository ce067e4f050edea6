"""Decode memory of `WanVAE`: activations for one latent frame at a time, whatever the clip length.

    .venv/bin/python -m bench.vae_decode            # compile-time analysis + measured RSS (CPU ok)
    .venv/bin/python -m bench.vae_decode --no-rss   # compile-time analysis only
    [--config mid] (analysed configs whose name contains this)  [--json out.json]

Part 1 asks XLA (`jit(...).lower(...).compile().memory_analysis()`) for the buffers of the decode
program at two clip lengths: `temp` (activations, caches, scratch) should not change, only `output`.
Part 2 runs the decode in a fresh subprocess per length (zero weights, so values do not matter) and
samples the process RSS while it runs: the rise above the pre-run level should grow by the output
size only. The children run with a fixed glibc mmap threshold: with glibc's default dynamic
threshold, large scratch buffers freed by the XLA CPU runtime migrate into the heap, whose
fragmentation makes RSS creep with run time (a few MiB here) whatever the program's buffers are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

from bench.results import add_json_arg, names_filter, write_json

MIB = 2**20

# (name, VAEConfig kwargs, latent height, latent width)
ANALYSED = [
    ("mid (base_dim 32)", dict(base_dim=32), 16, 16),
    ("Wan2.1 832x480", dict(), 60, 104),
]
MEASURED = ("small (base_dim 16)", dict(base_dim=16), 8, 8)
LENGTHS = (11, 21)  # latent frames: 41 and 81 video frames
MEASURED_LENGTHS = (6, 11, 21)
_CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _abstract(cfg_kwargs: dict):
    from flax import nnx

    from wanjax.models.vae import VAEConfig, WanVAE

    cfg = VAEConfig(**cfg_kwargs)
    return cfg, nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))


def _compiled_decode(model, latent_shape):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, state = nnx.split(model)
    z = jax.ShapeDtypeStruct(latent_shape, jnp.float32)
    fn = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode_stream(z))
    return fn.lower(state, z).compile(), state


def analyse(names=None) -> list[dict]:
    rows = []
    for name, kwargs, h, w in ANALYSED:
        if names is not None and name not in names:
            continue
        cfg, model = _abstract(kwargs)
        for tl in LENGTHS:
            compiled, _ = _compiled_decode(model, (1, cfg.z_dim, tl, h, w))
            mem = compiled.memory_analysis()
            rows.append(dict(
                config=name, latent=f"{cfg.z_dim}x{tl}x{h}x{w}",
                video=f"3x{1 + 4 * (tl - 1)}x{h * cfg.spatial_factor}x{w * cfg.spatial_factor}",
                latent_frames=tl,
                output_mib=mem.output_size_in_bytes / MIB, temp_mib=mem.temp_size_in_bytes / MIB,
                params_and_latents_mib=mem.argument_size_in_bytes / MIB,
            ))
    return rows


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure_child(latent_frames: int) -> dict:
    """Runs one decode and returns its RSS rise (run in a subprocess: runs share no heap)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    name, kwargs, h, w = MEASURED
    cfg, model = _abstract(kwargs)
    compiled, state = _compiled_decode(model, (1, cfg.z_dim, latent_frames, h, w))
    state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state)
    shape = (1, cfg.z_dim, latent_frames, h, w)
    z = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    jax.block_until_ready((state, z))
    before, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(state, z))
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    return dict(
        config=name, latent="x".join(map(str, shape[1:])), video="x".join(map(str, out.shape[1:])),
        output_mib=out.nbytes / MIB, rss_rise_mib=(peak[0] - before) / MIB,
        rise_minus_output_mib=(peak[0] - before - out.nbytes) / MIB, seconds=seconds,
    )


def measure() -> list[dict]:
    rows = []
    for tl in MEASURED_LENGTHS:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.vae_decode", "--child", str(tl)],
            capture_output=True, text=True, check=True, env={**os.environ, **_CHILD_ENV},
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def _table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vae_decode",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--no-rss", action="store_true", help="skip the measured subprocess runs")
    parser.add_argument("--config", action="append", default=None,
                        help="only analysed configs whose name contains this (repeatable)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    add_json_arg(parser)
    args = parser.parse_args(argv)
    if args.child is not None and args.child < 1:
        parser.error(f"--child must be >= 1, got {args.child}")
    try:
        names = names_filter([a[0] for a in ANALYSED], args.config)
    except ValueError as e:
        parser.error(str(e))
    if args.child:
        print(json.dumps(measure_child(args.child)))
        return
    import jax

    print(f"WanVAE.decode_stream memory, backend {jax.default_backend()}, float32, batch 1\n")
    print("XLA buffer analysis (compile only):")
    columns = ["config", "latent", "video", "output_mib", "temp_mib", "params_and_latents_mib"]
    analysed = analyse(names)
    print(_table(analysed, columns), flush=True)
    measured = []
    if not args.no_rss:
        print("\nMeasured process RSS rise during the decode (fresh subprocess per length):")
        columns = [
            "config", "latent", "video", "output_mib", "rss_rise_mib", "rise_minus_output_mib",
            "seconds",
        ]
        measured = measure()
        print(_table(measured, columns))
    if args.json:
        rows = [{"part": "xla", **r} for r in analysed] + [{"part": "rss", **r} for r in measured]
        write_json(args.json, "bench.vae_decode", rows, args)


if __name__ == "__main__":
    main()
