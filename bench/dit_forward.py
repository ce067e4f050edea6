"""DiT forward time on the CPU: our jitted JAX model vs diffusers (PyTorch eager), same weights.

    python -m bench.dit_forward [--repeats 5] [--threads N] [--config tiny] [--json out.json]

Prints one row per config: median seconds per forward for each and the ratio torch / jax
(> 1 means JAX is faster). Both run fp32 on the same random weights and inputs; the output
difference is printed too, so the timing compares equal work.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.results import add_json_arg, names_filter, write_json
from bench.timing import median_time

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from convert.keymaps import dit_keymap  # noqa: E402
from wanjax.argtypes import nonnegative_int, positive_int  # noqa: E402
from wanjax.config import DiTConfig  # noqa: E402
from wanjax.io.params import load_flat_params  # noqa: E402
from wanjax.models.dit import WanDiT  # noqa: E402
from wanjax.models.runner import DiT  # noqa: E402

CONFIGS = {
    "tiny (dim 64, 2 layers, 16x3x8x8)": (
        DiTConfig(dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32, freq_dim=32,
                  text_len=16),
        (1, 16, 3, 8, 8),
    ),
    "mid (dim 1024, 8 layers, 16x4x32x32)": (
        DiTConfig(dim=1024, ffn_dim=4096, num_heads=8, num_layers=8, text_dim=4096),
        (1, 16, 4, 32, 32),
    ),
}


def bench_config(cfg: DiTConfig, shape, repeats: int) -> dict:
    import torch

    from torch_refs import diffusers_dit, state_dict_numpy

    ref = diffusers_dit(cfg, seed=0)
    module = WanDiT(cfg, rngs=nnx.Rngs(0))
    load_flat_params(module, dit_keymap(cfg, "diffusers").to_ours(state_dict_numpy(ref)))
    model = DiT(module)

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    t = np.full((shape[0],), 500)
    ctx = rng.standard_normal((shape[0], cfg.text_len, cfg.text_dim)).astype(np.float32)

    xj, tj, cj = jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx)
    start = time.perf_counter()
    out_jax = np.asarray(model(xj, tj, cj))
    compile_s = time.perf_counter() - start
    jax_s = median_time(lambda: model(xj, tj, cj).block_until_ready(), repeats)

    xt, tt, ct = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx)
    with torch.inference_mode():
        out_torch = ref(xt, tt, ct, return_dict=False)[0].numpy()
        torch_s = median_time(lambda: ref(xt, tt, ct, return_dict=False), repeats)
    rel = float(np.abs(out_jax - out_torch).max() / np.abs(out_torch).max())
    return dict(jax_s=jax_s, torch_s=torch_s, compile_s=compile_s, rel_err=rel)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed forwards per model")
    parser.add_argument("--threads", type=nonnegative_int, default=0,
                        help="torch intra-op threads (0: torch default)")
    parser.add_argument("--config", action="append", default=None,
                        help="only configs whose name contains this (repeatable; default: all)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    try:
        names = names_filter(CONFIGS, args.config)
    except ValueError as e:
        parser.error(str(e))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__} on {jax.default_backend()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); fp32, median of {args.repeats}")
    print("| config | jax s/fwd | torch s/fwd | torch/jax | jax compile s | max rel diff |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name in names:
        cfg, shape = CONFIGS[name]
        r = bench_config(cfg, shape, args.repeats)
        rows.append(dict(config=name, **r, torch_over_jax=r["torch_s"] / r["jax_s"]))
        print(f"| {name} | {r['jax_s']:.4f} | {r['torch_s']:.4f} | "
              f"{r['torch_s'] / r['jax_s']:.2f}x | {r['compile_s']:.1f} | {r['rel_err']:.1e} |",
              flush=True)
    if args.json:
        write_json(args.json, "bench.dit_forward", rows, args, torch=torch.__version__,
                   torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
