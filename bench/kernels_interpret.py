"""HiF4 matmul kernels in Pallas interpret mode (any machine, a CPU included): error against
`x @ dequant(W)` as a fraction of the float32-summation error bound.

    python -m bench.kernels_interpret [--m 1,16,256] [--k 512,640] [--n 256] [--seed 0]
                                      [--json out.json]

For every (M, K, N) and both kernel backends, `hif4_matmul(x, packed, backend=B, interpret=True)`
(TPU: the Mosaic kernels, GPU: the Triton kernels, run by the Pallas interpreter; the variant is
the one the default small-M threshold picks) is compared with a float64 `x @ W` where `W` is the
packed weight dequantized by `wanjax.quant.unpack` (the packing library's decoder, not the
kernels'; equal bit for bit to `kernels_pallas.dequantize`). Column `err / bound`: the largest
`|error| / bound` over the output, where the bound is the rigorous float32-summation bound
(`kernels_pallas.reference.summation_error_bound`); `pass` is `err <= bound` everywhere. K = 640 is not a multiple of 512, so it also
checks the K padding. Interpret mode checks numerics only: its seconds are not kernel speed.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.kernels import _ints
from bench.results import add_json_arg, write_json
from kernels_pallas import hif4_matmul
from kernels_pallas.blocks import GPU_SMALL_M, TPU_SMALL_M
from kernels_pallas.reference import summation_error_bound
from wanjax.quant import pack, unpack

BACKENDS = ("tpu", "gpu")
DEFAULT_M, DEFAULT_K, DEFAULT_N = (1, 16, 256), (512, 640), (256,)


def random_weight(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """`W[K, N]` float32 whose 64-row groups have scales 2^-8 .. 2^7 apart, one all-zero group and
    a few outliers (so scale exponents and the per-8 / per-4 bits vary)."""
    group_scale = np.exp2(rng.integers(-8, 8, size=(-(-k // 64), n)))
    w = rng.standard_normal((k, n)) * group_scale[np.arange(k) // 64]
    w[:64, 0] = 0.0
    w[rng.integers(0, k, 4), rng.integers(0, n, 4)] *= 100.0
    return w.astype(np.float32)


def variant(backend: str, m: int) -> str:
    """The kernel variant the default small-M threshold picks for `m` rows."""
    if backend == "tpu":
        return "streaming" if m <= TPU_SMALL_M else "cached panel"
    return "fused" if m <= GPU_SMALL_M else "dequant + XLA dot"


def check(backend: str, m: int, k: int, n: int, seed: int = 0) -> dict:
    """One interpret-mode matmul (bf16 activations) against the float64 reference."""
    rng = np.random.default_rng([seed, m, k, n])
    packed = pack(random_weight(rng, k, n), "hif4", axis=0)
    w = np.asarray(unpack(packed), np.float64)
    x = jnp.asarray(rng.standard_normal((m, k)), jnp.bfloat16)
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    start = time.perf_counter()
    y = np.asarray(jax.block_until_ready(hif4_matmul(x, packed, backend=backend, interpret=True)),
                   np.float64)
    seconds = time.perf_counter() - start
    err = np.abs(y - x64 @ w)
    bound = summation_error_bound(x64, w)
    ratio = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0),
                     np.where(err > 0, np.inf, 0.0))
    return dict(backend=backend, variant=variant(backend, m), m=m, k=k, n=n,
                max_err_over_bound=float(ratio.max()), max_abs_err=float(err.max()),
                passed=bool(np.all(err <= bound)), seconds=seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kernels_interpret", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--m", type=_ints, default=DEFAULT_M, help="token counts")
    parser.add_argument("--k", type=_ints, default=DEFAULT_K, help="reduction sizes")
    parser.add_argument("--n", type=_ints, default=DEFAULT_N, help="output sizes")
    parser.add_argument("--backend", choices=BACKENDS, action="append", default=None,
                        help="kernel backends (repeatable; default: both)")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    add_json_arg(parser)
    args = parser.parse_args(argv)

    print(f"# HiF4 kernels in Pallas interpret mode: jax {jax.__version__} on "
          f"{jax.default_backend()}; x bf16, f32 accumulation; reference float64 x @ unpack(W); "
          f"seconds include compilation and are not kernel speed")
    print("| backend | variant | M | K | N | err / bound | max abs err | pass | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for backend in args.backend or BACKENDS:
        for k in args.k:
            for n in args.n:
                for m in args.m:
                    r = check(backend, m, k, n, args.seed)
                    rows.append(r)
                    print(f"| {backend} | {r['variant']} | {m} | {k} | {n} | "
                          f"{r['max_err_over_bound']:.3f} | {r['max_abs_err']:.1e} | "
                          f"{'yes' if r['passed'] else 'NO'} | {r['seconds']:.1f} |", flush=True)
    if args.json:
        write_json(args.json, "bench.kernels_interpret", rows, args)
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
