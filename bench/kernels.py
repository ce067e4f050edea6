"""HiF4 matmul kernels vs `jnp.dot` with bf16 weights, at the Wan A14B projection shapes.

    python -m bench.kernels [--m 1,16,64,512,75600] [--k 5120] [--n 5120,13824] [--repeats 5]
                            [--variants] [--json out.json]

Rows per (M, K, N): the bf16-weight `jnp.dot` baseline; `hif4_matmul` W4A16 on the 'auto' path
(TPU: Mosaic streaming/panel kernel by M; GPU: fused Triton kernel or dequantize + XLA matmul by
M; elsewhere the jnp reference); the HiF4 activation quantization alone; and W4A4 (activation
quantization + kernel, unfused). `--variants` also times both kernel variants of the platform
at every M, to set the small-M thresholds (`kernels_pallas.BlockSizes.small_m`) from data.
Every kernel row is checked against `x @ dequantize(W)` (column `max rel diff`).

On a CPU the 'auto' path is the jnp reference (dequantize, then XLA's dot): no Pallas kernel
runs, the table says so, and M = 75600 is left out unless `--m` names it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from bench.results import add_json_arg, write_json
from kernels_pallas import BlockSizes, dequantize, hif4_matmul, to_tiled
from wanjax.argtypes import positive_int
from wanjax.quant import fake_quant, pack

DEFAULT_M = (1, 16, 64, 512, 75_600)
CPU_MAX_M = 512
ACT_QUANT = "HiF4 act quant only"


def _ints(text: str) -> tuple[int, ...]:
    """'512,1024' -> (512, 1024); every size >= 1 (argparse reports a bad list as one line)."""
    return tuple(positive_int(v) for v in text.split(","))


def _time(fn, *args, repeats: int) -> tuple[float, float, jax.Array]:
    """(compile + first run seconds, median run seconds, output)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - start)
    return first, statistics.median(runs), out


def _variants(platform: str, m: int) -> dict[str, BlockSizes]:
    """Both kernel variants of `platform`, forced through the small-M threshold."""
    if platform == "tpu":
        out = {"tpu panel": BlockSizes(small_m=0)}
        if m <= 4096:  # the streaming kernel keeps all M rows in VMEM
            out["tpu streaming"] = BlockSizes(small_m=m)
        return out
    if platform == "gpu":
        return {"gpu fused": BlockSizes(small_m=m), "gpu dequant+dot": BlockSizes(small_m=0)}
    return {}


def _auto_label(platform: str, m: int) -> str:
    if platform == "tpu":
        return "W4A16 auto (tpu " + ("streaming)" if m <= 256 else "panel)")
    if platform == "gpu":
        return "W4A16 auto (gpu " + ("fused)" if m <= 64 else "dequant+dot)")
    return "W4A16 auto (jnp reference)"


def bench_shape(m: int, k: int, n: int, repeats: int, variants: bool) -> list[dict]:
    platform = jax.default_backend()
    key_w, key_x = jax.random.split(jax.random.key(0))
    w = jax.random.normal(key_w, (k, n), jnp.float32)
    tiled = jax.block_until_ready(to_tiled(pack(w, "hif4", axis=0)))
    w_bf16 = w.astype(jnp.bfloat16)
    del w
    x = jax.random.normal(key_x, (m, k), jnp.bfloat16)
    flops = 2 * m * k * n

    dense = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32))
    exact = jax.block_until_ready(dense(x, dequantize(tiled, jnp.bfloat16)))
    scale = float(jnp.max(jnp.abs(exact)))

    def quantize_act(x):
        return fake_quant(x.astype(jnp.float32), "hif4", -1).astype(jnp.bfloat16)

    cases = {
        "bf16 jnp.dot": (dense, (x, w_bf16), False),
        _auto_label(platform, m): (jax.jit(hif4_matmul), (x, tiled), True),
        ACT_QUANT: (jax.jit(quantize_act), (x,), False),
        "W4A4 (act quant + auto)": (
            jax.jit(lambda x, w: hif4_matmul(quantize_act(x), w)), (x, tiled), False
        ),
    }
    if variants:
        for name, blocks in _variants(platform, m).items():
            fn = jax.jit(lambda x, w, b=blocks, p=platform: hif4_matmul(
                x, w, backend=p, block_sizes=b))
            cases[name] = (fn, (x, tiled), True)

    rows, base = [], None
    for name, (fn, args, check) in cases.items():
        first, median, out = _time(fn, *args, repeats=repeats)
        base = base or median
        diff = float(jnp.max(jnp.abs(out - exact))) / scale if check else None
        tflops = None if name == ACT_QUANT else flops / median / 1e12
        rows.append(dict(m=m, k=k, n=n, path=name, ms=median * 1e3, first_s=first,
                         tflops=tflops, vs_bf16=base / median, max_rel_diff=diff))
        del out
    quant, w4a16 = rows[2], rows[1]
    quant["path"] += f" ({quant['ms'] / w4a16['ms']:.0%} of W4A16)"
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kernels", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--m", type=_ints, default=None,
                        help=f"token counts (None: {DEFAULT_M}, on CPU only those up to "
                             f"{CPU_MAX_M})")
    parser.add_argument("--k", type=_ints, default=(5120,), help="reduction sizes")
    parser.add_argument("--n", type=_ints, default=(5120, 13824), help="output sizes")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs (median)")
    parser.add_argument("--variants", action="store_true", help="time both kernel variants")
    add_json_arg(parser)
    args = parser.parse_args(argv)

    platform = jax.default_backend()
    device = jax.devices()[0]
    ms = args.m or DEFAULT_M
    if args.m is None and platform == "cpu":
        ms = tuple(m for m in DEFAULT_M if m <= CPU_MAX_M)
    print(f"# HiF4 matmul bench: jax {jax.__version__}, {platform} ({device.device_kind}), "
          f"median of {args.repeats}, x bf16, f32 accumulation")
    if platform not in ("tpu", "gpu"):
        print(f"# NOTE: on {platform} 'auto' runs the jnp REFERENCE path (dequantize + XLA dot); "
              f"no Pallas kernel is timed here. Run on a TPU or GPU for kernel numbers.")
        if args.m is None:
            print(f"# M > {CPU_MAX_M} left out on {platform} (pass --m to force)")
    print("| M | K | N | path | ms | TFLOP/s | vs bf16 dot | max rel diff |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for k in args.k:
        for n in args.n:
            for m in ms:
                for r in bench_shape(m, k, n, args.repeats, args.variants):
                    rows.append(r)
                    diff = "-" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
                    tflops = "-" if r["tflops"] is None else f"{r['tflops']:.2f}"
                    print(f"| {m} | {k} | {n} | {r['path']} | {r['ms']:.3f} | {tflops} "
                          f"| {r['vs_bf16']:.2f}x | {diff} |", flush=True)
    if args.json:
        write_json(args.json, "bench.kernels", rows, args, platform=platform,
                   device=device.device_kind, kernels_timed=platform in ("tpu", "gpu"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
