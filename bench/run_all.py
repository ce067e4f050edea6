"""`python -m bench.run_all` (what `make bench` runs): every bench script, one after another.

Each script prints its own table (what it measures and on which backend); this runner only
sequences them, each in a fresh process so one's memory and compilation caches do not colour the
next, and states which ones failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHES = (
    ("DiT forward vs diffusers (CPU ratio)", ["bench.dit_forward"]),
    ("sampling: compile, per-step time, peak memory", ["bench.sample"]),
    ("conversion: MB/s and peak RSS", ["bench.convert"]),
    ("HiF4 fake-quant throughput vs torch", ["bench.quantize"]),
    ("VAE decode memory vs clip length", ["bench.vae_decode"]),
    ("HiF4 kernels vs bf16 jnp.dot", ["bench.kernels"]),
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", help="run benches whose module contains this")
    args = p.parse_args(argv)
    unmatched = [o for o in args.only or () if not any(o in cmd[0] for _, cmd in BENCHES)]
    if unmatched:
        p.error(f"--only {', '.join(unmatched)}: no bench module matches; the benches are "
                f"{', '.join(cmd[0] for _, cmd in BENCHES)}")
    failed = []
    for title, cmd in BENCHES:
        if args.only and not any(o in cmd[0] for o in args.only):
            continue
        print(f"\n## {title} (python -m {' '.join(cmd)})\n", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", *cmd])
        print(f"\n({time.perf_counter() - start:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(cmd[0])
    if failed:
        print(f"error: failed benches: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
