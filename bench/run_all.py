"""`python -m bench.run_all` (what `make bench` runs): every bench script, one after another, and
one report.

Each bench runs in a fresh process (so one's memory and compilation caches do not colour the
next) with `--json OUT/<bench>.json`; its printed table streams to the terminal as usual. Then
`OUT/report.md` gets a header (date, CPU count, platform, jax version, backend, accelerator or
not, quick or full run), ONE summary table with a row per claim built from those JSON files only
(`bench.summary`), and each bench's own printed output. A bench that fails gets a row saying so,
and the exit status is non-zero. `--quick` passes small sizes to every bench (a minute or two on
two CPU cores; numbers are then a smoke test, not measurements).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.summary import Outcome, render_report

# (module, title, extra arguments for --quick)
BENCHES = (
    ("bench.dit_forward", "DiT forward vs diffusers (CPU ratio)",
     ["--repeats", "3", "--config", "tiny"]),
    ("bench.sample", "sampling: compile, per-step time, peak memory",
     ["--steps", "2", "--config", "tiny"]),
    ("bench.convert", "conversion: MB/s and peak RSS",  # 440 MB: the smallest it makes
     ["--size-gb", "0.4", "--shard-mb", "500"]),
    ("bench.quantize", "HiF4 fake-quant throughput vs torch",
     ["--repeats", "1", "--weight", "1024x2048", "--activation", "512x1024"]),
    ("bench.vae_decode", "VAE decode memory vs clip length", ["--no-rss", "--config", "mid"]),
    ("bench.kernels_interpret", "HiF4 kernels: interpret-mode correctness",
     ["--m", "1,16", "--k", "512,640"]),
    ("bench.kernels", "HiF4 kernels vs bf16 jnp.dot",
     ["--m", "1,16", "--k", "512", "--n", "256", "--repeats", "3"]),
    ("bench.memory", "weight memory per expert: bf16 vs HiF4", []),
    ("bench.dmd_step", "DMD training: critic and generator update time (toy)",
     ["--repeats", "1", "--batch-size", "4", "--student-steps", "1000"]),
)
STDERR_TAIL = 40  # lines of a failed bench's stderr kept for the report

_PROBE = ("import json, jax; d = jax.devices()[0]; print(json.dumps({'jax': jax.__version__, "
          "'backend': jax.default_backend(), 'device': d.device_kind, "
          "'device_count': jax.device_count(), "
          "'accelerator': jax.default_backend() in ('gpu', 'tpu')}))")


def _tee(stream, sink, keep: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.write(line)
        sink.flush()
        keep.append(line)
    stream.close()


def run_bench(cmd: list[str]) -> tuple[int, str, str]:
    """Runs `python -m cmd...`, streaming its stdout and stderr; returns (exit, stdout, stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    out, err = [], []
    threads = [threading.Thread(target=_tee, args=(proc.stdout, sys.stdout, out)),
               threading.Thread(target=_tee, args=(proc.stderr, sys.stderr, err))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return proc.wait(), "".join(out), "".join(err)


def probe_environment() -> dict | None:
    """jax version, backend and devices, asked of a child process (this one never imports jax,
    so it holds no accelerator memory while the benches run)."""
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return None


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", help="run benches whose module contains this")
    p.add_argument("--out", type=Path, default=Path("outputs/bench"),
                   help="folder for the JSON results and report.md (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes for every bench (smoke test; the report says so)")
    args = p.parse_args(argv)
    unmatched = [o for o in args.only or () if not any(o in m for m, _, _ in BENCHES)]
    if unmatched:
        p.error(f"--only {', '.join(unmatched)}: no bench module matches; the benches are "
                f"{', '.join(m for m, _, _ in BENCHES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    begin = time.perf_counter()
    env = probe_environment()
    outcomes = []
    for module, title, quick in BENCHES:
        json_path = args.out / f"{module.removeprefix('bench.')}.json"
        cmd = [module, *(quick if args.quick else []), "--json", str(json_path)]
        outcome = Outcome(module, title, cmd)
        outcomes.append(outcome)
        if args.only and not any(o in module for o in args.only):
            continue
        json_path.unlink(missing_ok=True)  # never read a previous run's results
        print(f"\n## {title} (python -m {shlex.join(cmd)})\n", flush=True)
        start = time.perf_counter()
        outcome.exit_code, outcome.stdout, stderr = run_bench(cmd)
        outcome.seconds = time.perf_counter() - start
        outcome.stderr_tail = "".join(stderr.splitlines(keepends=True)[-STDERR_TAIL:])
        outcome.result = read_json(json_path)
        print(f"\n({outcome.seconds:.0f} s, exit {outcome.exit_code})", flush=True)
    command = shlex.join(["python", "-m", "bench.run_all", *(argv if argv is not None
                                                              else sys.argv[1:])])
    report = render_report(outcomes, date=date, cpu_count=os.cpu_count(),
                           host=platform.platform(), env=env, quick=args.quick,
                           command=command, seconds=time.perf_counter() - begin)
    (args.out / "report.md").write_text(report)
    print(f"\nwrote {args.out / 'report.md'}", flush=True)
    failed = [o.module for o in outcomes if o.failed]
    if failed:
        print(f"error: failed benches: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
