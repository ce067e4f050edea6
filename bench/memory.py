"""Weight memory per DiT expert, bf16 vs HiF4-packed, from shapes alone (nothing is allocated).

    python -m bench.memory [--config a14b] [--json out.json]

bf16: every parameter of the expert in bf16 (`wanjax.memory.param_bytes_per_device` on one
device). HiF4: `wanjax.quant.packed_model.packed_memory` with the default rule (every linear
inside `blocks` packed, 4.5 bits per value), plus those layers' bias (bf16) and smoothing
(float32), plus every other ("protected") parameter in bf16. The same numbers as
`python -m wanjax.memory --config a14b --mesh fsdp=1 --packed`.
"""

from __future__ import annotations

import argparse

import jax

from bench.results import add_json_arg, write_json
from wanjax.config import DiTConfig, get_preset
from wanjax.memory import param_bytes_per_device, shape_mesh
from wanjax.parallel.mesh import parse_mesh

GB = 1e9


def experts(config: str) -> dict[str, DiTConfig]:
    """Expert name -> DiT config of a preset (a single-DiT preset gives one 'dit' expert)."""
    model = get_preset(config).MODEL
    return {"high": model.high, "low": model.low} if hasattr(model, "high") else {"dit": model}


def expert_memory(cfg: DiTConfig) -> dict:
    """Bytes of one expert: bf16, and HiF4-packed split into its parts."""
    from wanjax.quant.packed_model import packed_memory  # pulls in the Pallas kernels

    params, bf16 = param_bytes_per_device(cfg, shape_mesh(parse_mesh("fsdp=1"), 1))
    m = packed_memory(cfg)
    hif4 = m.packed_linears + m.packed_extras + m.protected
    return dict(params=params, bf16_bytes=bf16, hif4_bytes=hif4,
                hif4_linears_bytes=m.packed_linears, hif4_extras_bytes=m.packed_extras,
                protected_bf16_bytes=m.protected, packed_values=m.packed_params,
                bf16_over_hif4=bf16 / hif4)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default="a14b", help="model preset (a14b, ti2v_5b, tiny)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    try:
        named = experts(args.config)
    except (KeyError, ValueError) as e:
        parser.error(f"--config {args.config}: {e}")
    print(f"# weight memory per expert, {args.config}, from shapes (jax {jax.__version__}); "
          f"HiF4 = packed block linears (4.5 bits) + their bias/smoothing + protected bf16 params")
    print("| expert | params | bf16 GB | HiF4 GB (linears + extras + protected) | bf16 / HiF4 |")
    print("|---|---|---|---|---|")
    rows, computed = [], {}
    for name, cfg in named.items():
        if cfg not in computed:  # A14B's two experts have the same shapes
            computed[cfg] = expert_memory(cfg)
        r = dict(config=args.config, expert=name, **computed[cfg])
        rows.append(r)
        print(f"| {name} | {r['params']:,} | {r['bf16_bytes'] / GB:.2f} | "
              f"{r['hif4_bytes'] / GB:.2f} ({r['hif4_linears_bytes'] / GB:.2f} + "
              f"{r['hif4_extras_bytes'] / GB:.3f} + {r['protected_bf16_bytes'] / GB:.2f}) | "
              f"{r['bf16_over_hif4']:.2f}x |", flush=True)
    if args.json:
        write_json(args.json, "bench.memory", rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
