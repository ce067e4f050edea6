"""Sampling cost on this machine: compile time, per-step time and peak memory, CFG batched vs
two-pass, for the tiny and a mid-size dual-expert config.

    python -m bench.sample [--steps 8] [--config tiny] [--json out.json]

Peak memory is XLA's own accounting of the compiled sampler (arguments + outputs + temporaries),
which is what decides whether a configuration fits on an accelerator.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from bench.results import add_json_arg, names_filter, write_json
from configs import tiny
from wanjax.argtypes import positive_int
from wanjax.config import DiTConfig
from wanjax.models.dit import WanDiT
from wanjax.sampling.loop import SampleConfig, dit_apply, make_sampler

CONFIGS = {
    "tiny (dim 64, 2 layers), 16x5x16x16": (tiny.EXPERT, (1, 16, 5, 16, 16)),
    "mid (dim 512, 4 layers), 16x5x32x32": (
        DiTConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=4, text_dim=256, text_len=64),
        (1, 16, 5, 32, 32),
    ),
}


def bench(cfg: DiTConfig, shape, steps: int, mode: str) -> dict:
    gd, params = nnx.split(WanDiT(cfg, rngs=nnx.Rngs(0)))
    apply = dit_apply(gd)
    sample_cfg = SampleConfig(num_steps=steps, cfg_mode=mode)
    sample = make_sampler(apply, apply, sample_cfg)
    noise = jnp.ones(shape)
    ctx = jnp.ones((shape[0], cfg.text_len, cfg.text_dim))
    args = (params, params, noise, ctx, ctx, jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    compiled = sample.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    peak = sum(getattr(mem, f, 0) or 0 for f in ("argument_size_in_bytes", "output_size_in_bytes",
                                                  "temp_size_in_bytes"))
    compiled(*args).block_until_ready()
    t0 = time.perf_counter()
    compiled(*args).block_until_ready()
    run_s = time.perf_counter() - t0
    return {"compile_s": compile_s, "step_s": run_s / steps, "peak_mb": peak / 2**20}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=8,
                   help="UniPC steps (default: %(default)s)")
    p.add_argument("--config", action="append", default=None,
                   help="only configs whose name contains this (repeatable; default: all)")
    add_json_arg(p)
    args = p.parse_args(argv)
    try:
        names = names_filter(CONFIGS, args.config)
    except ValueError as e:
        p.error(str(e))
    print(f"jax {jax.__version__} on {jax.default_backend()}; {args.steps} UniPC steps, dual "
          f"expert, CFG; peak = XLA arguments + outputs + temporaries")
    print("| config | CFG | compile s | s/step | peak MB |")
    print("|---|---|---|---|---|")
    rows = []
    for name in names:
        cfg, shape = CONFIGS[name]
        for mode in ("batched", "two_pass"):
            r = bench(cfg, shape, args.steps, mode)
            rows.append(dict(config=name, cfg_mode=mode, steps=args.steps, **r))
            print(f"| {name} | {mode} | {r['compile_s']:.1f} | {r['step_s']:.3f} | "
                  f"{r['peak_mb']:.1f} |", flush=True)
    if args.json:
        write_json(args.json, "bench.sample", rows, args)


if __name__ == "__main__":
    main()
