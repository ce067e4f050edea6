"""HiF4 fake-quantization throughput on the CPU: our jitted JAX vs a straightforward torch version.

    python -m bench.quantize [--repeats 3] [--threads N] [--weight 5120x13824]
                             [--activation 4096x5120] [--json out.json]

The torch baseline is a torch implementation written from the spec (`shared/docs/hif4_format.md`)
in the same vectorised style as the reference library's pure-PyTorch path; it is NOT the
reference library (global-computing-consortium/HiFloat4 is not installed). Both run float32 on
the same data, and the outputs are compared bit for bit, so the timing compares equal work.

Rows: the A14B FFN weight as a Flax kernel `[in=5120, out=13824]` quantized along `in` (axis 0,
as `QuantLinear` does), and a 4096-token activation `[4096, 5120]` along its last axis (`--weight` / `--activation` change
the shapes, e.g. for a quick run).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.results import add_json_arg, write_json
from bench.timing import median_time
from wanjax.argtypes import nonnegative_int, positive_int
from wanjax.quant import fake_quant

WEIGHT, ACTIVATION = (5120, 13824), (4096, 5120)


def _shape(text: str) -> tuple[int, int]:
    """'5120x13824' -> (5120, 13824)."""
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS, e.g. 512x1024, got {text!r}")
    return positive_int(parts[0]), positive_int(parts[1])


def cases(weight=WEIGHT, activation=ACTIVATION) -> dict[str, tuple[tuple[int, int], int]]:
    """Row name -> (shape, axis): a Flax kernel along `in` (axis 0), an activation along -1."""
    return {
        f"weight {weight[0]}x{weight[1]}, axis 0": (tuple(weight), 0),
        f"activation {activation[0]}x{activation[1]}, axis -1": (tuple(activation), -1),
    }


def torch_hif4_from_spec(x, dim: int):
    """HiF4 quantize-dequantize along `dim`, written from the spec with plain torch ops."""
    import torch

    moved = x.movedim(dim, -1)
    length = moved.shape[-1]
    pad = -length % 64
    if pad:
        moved = torch.nn.functional.pad(moved, (0, pad))
    groups = moved.reshape(*moved.shape[:-1], -1, 8, 2, 4)
    mag = groups.abs()
    m4 = mag.amax(-1)
    m8 = m4.amax(-1)
    m64 = m8.amax(-1)

    def bf16(v):
        return v.to(torch.bfloat16).to(torch.float32)

    seventh = bf16(torch.tensor(1 / 7, dtype=torch.float32))
    s0 = bf16(m64 * seventh).clamp(2.0**-48, 49152.0)
    mant, exp = torch.frexp(s0)  # E6M2: 3 significant bits, ties to even
    scale = torch.ldexp(torch.round(mant * 8) / 8, exp)
    rec = bf16(1.0 / scale)
    pow_a = torch.where(m8 * rec[..., None] >= 4, 2.0, 1.0)
    pow_b = torch.where((m4 * rec[..., None, None]) / pow_a[..., None] >= 2, 2.0, 1.0)
    t = mag / pow_a[..., None, None] / pow_b[..., None] * rec[..., None, None, None]
    q = torch.floor(t * 4 + 0.5).clamp(max=7)
    out = torch.sign(groups) * (q / 4) * pow_a[..., None, None] * pow_b[..., None]
    out = out * scale[..., None, None, None]
    out = out.reshape(moved.shape)[..., :length]
    return out.movedim(-1, dim)


def bench_case(shape: tuple[int, int], axis: int, repeats: int) -> dict:
    import torch

    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    xj = jnp.asarray(x)
    start = time.perf_counter()
    out_jax = np.asarray(fake_quant(xj, "hif4", axis))
    compile_s = time.perf_counter() - start
    jax_s = median_time(lambda: fake_quant(xj, "hif4", axis).block_until_ready(), repeats)

    xt = torch.from_numpy(x)
    with torch.inference_mode():
        out_torch = torch_hif4_from_spec(xt, axis).numpy()
        torch_s = median_time(lambda: torch_hif4_from_spec(xt, axis), repeats)
    return dict(
        jax_s=jax_s,
        torch_s=torch_s,
        compile_s=compile_s,
        values=x.size,
        bit_exact=bool(np.array_equal(out_jax, out_torch)),
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed runs per implementation")
    parser.add_argument("--threads", type=nonnegative_int, default=0,
                        help="torch threads (0: default)")
    parser.add_argument("--weight", type=_shape, default=WEIGHT, metavar="KxN",
                        help="weight shape, quantized along axis 0")
    parser.add_argument("--activation", type=_shape, default=ACTIVATION, metavar="MxK",
                        help="activation shape, quantized along the last axis")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"jax {jax.__version__} on {jax.default_backend()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); HiF4 fake quant, float32, median of {args.repeats}"
    )
    print("baseline: torch implementation from the spec, not the reference library")
    print("| case | jax s | jax Mvalues/s | torch-from-spec s | speedup | compile s | bit-exact |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name, (shape, axis) in cases(args.weight, args.activation).items():
        r = bench_case(shape, axis, args.repeats)
        rows.append(dict(case=name, shape=shape, axis=axis, **r,
                         jax_mvalues_per_s=r["values"] / r["jax_s"] / 1e6,
                         speedup=r["torch_s"] / r["jax_s"]))
        print(
            f"| {name} | {r['jax_s']:.3f} | {r['values'] / r['jax_s'] / 1e6:.0f} | "
            f"{r['torch_s']:.3f} | {r['torch_s'] / r['jax_s']:.1f}x | {r['compile_s']:.1f} | "
            f"{'yes' if r['bit_exact'] else 'NO'} |", flush=True
        )
    if args.json:
        write_json(args.json, "bench.quantize", rows, args, torch=torch.__version__,
                   baseline="torch implementation from the spec, not the reference library")


if __name__ == "__main__":
    main()
