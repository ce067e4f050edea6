"""The summary table of `bench.run_all`: one row per claim, every number read from the benches'
JSON results of that run (`bench.results` envelope), none typed in.

`summary_rows(outcomes)` -> `[(claim, result, source)]`; `render_report(...)` -> report.md text.
A bench that failed or was not run still gets a row saying so, so no claim silently disappears.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

GB, MB = 1e9, 1e6


@dataclasses.dataclass
class Outcome:
    """One bench of a run: its command, exit status, parsed `--json` result and printed output.
    `exit_code` None: not run (filtered out by `--only`)."""

    module: str
    title: str
    command: list[str]
    exit_code: int | None = None
    result: dict | None = None
    stdout: str = ""
    stderr_tail: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.exit_code is not None and (self.exit_code != 0 or self.result is None)


def _yes(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _backend(r: dict) -> str:
    return r.get("environment", {}).get("backend", "?")


def dit_forward_rows(r: dict) -> list[tuple[str, str]]:
    return [(f"DiT forward torch/JAX ratio (fp32, jax on {_backend(r)}): {row['config']}",
             f"{row['torch_over_jax']:.2f}x (jax {row['jax_s']:.4f} s, torch {row['torch_s']:.4f} "
             f"s per forward; max rel diff {row['rel_err']:.1e})") for row in r["rows"]]


def sample_rows(r: dict) -> list[tuple[str, str]]:
    return [(f"sampling compile and step time ({_backend(r)}): {row['config']}, CFG "
             f"{row['cfg_mode']}",
             f"compile {row['compile_s']:.1f} s, {row['step_s']:.4f} s/step "
             f"({row['steps']} UniPC steps), peak {row['peak_mb']:.1f} MB") for row in r["rows"]]


def convert_rows(r: dict) -> list[tuple[str, str]]:
    out = []
    for row in r["rows"]:
        limit = r.get("claim_max_peak_over_shard")
        ratio = row["peak_over_largest_shard"]
        verdict = f" (claim < {limit:g}: {_yes(ratio < limit)})" if limit is not None else ""
        out.append(("conversion MB/s and peak RSS",
                    f"{row['convert_mb_per_s']:.0f} MB/s converting {row['source_bytes'] / MB:,.0f}"
                    f" MB float32 to {row['dtype']}; peak RSS {row['peak_rss_bytes'] / MB:,.0f} MB"
                    f" = {ratio:.2f}x the largest shard{verdict}; load "
                    f"{row['load_mb_per_s']:.0f} MB/s"))
    return out


def quantize_rows(r: dict) -> list[tuple[str, str]]:
    baseline = r.get("baseline", "torch")
    return [(f"HiF4 quantization speedup vs the torch path: {row['case']}",
             f"{row['speedup']:.1f}x (jax {row['jax_s']:.3f} s = {row['jax_mvalues_per_s']:.0f} "
             f"Mvalues/s, torch {row['torch_s']:.3f} s); bit-exact "
             f"{'yes' if row['bit_exact'] else 'NO'}; baseline: {baseline}") for row in r["rows"]]


def vae_decode_rows(r: dict) -> list[tuple[str, str]]:
    by_config = defaultdict(list)
    for row in r["rows"]:
        by_config[(row["part"], row["config"])].append(row)
    out = []
    for (part, config), rows in by_config.items():
        if part == "xla":
            temps = ", ".join(f"{x['temp_mib']:.1f} MiB at {x['latent_frames']}" for x in rows)
            outs = ", ".join(f"{x['output_mib']:.1f}" for x in rows)
            out.append((f"VAE decode memory vs clip length (XLA analysis): {config}",
                        f"temp {temps} latent frames; output {outs} MiB"))
        else:
            rises = ", ".join(f"{x['rise_minus_output_mib']:.1f}" for x in rows)
            out.append((f"VAE decode RSS rise minus output vs clip length: {config}",
                        f"{rises} MiB at latents {', '.join(x['latent'] for x in rows)}"))
    return out


def kernels_interpret_rows(r: dict) -> list[tuple[str, str]]:
    by_backend = defaultdict(list)
    for row in r["rows"]:
        by_backend[row["backend"]].append(row)
    out = []
    for backend, rows in by_backend.items():
        variants = sorted({x["variant"] for x in rows})
        failing = [x for x in rows if not x["passed"]]
        worst = max(x["max_err_over_bound"] for x in rows)
        grid = ", ".join(f"{d.upper()} {'/'.join(map(str, sorted({x[d] for x in rows})))}"
                         for d in "mkn")
        verdict = "pass" if not failing else f"FAIL ({len(failing)} of {len(rows)} shapes)"
        out.append((f"kernel interpret-mode correctness: {backend} ({', '.join(variants)})",
                    f"max error / bound {worst:.3f}, {verdict}; {len(rows)} shapes ({grid})"))
    return out


def kernels_rows(r: dict) -> list[tuple[str, str]]:
    env = r.get("environment", {})
    backend = env.get("backend", r.get("platform", "?"))
    auto = [x for x in r["rows"] if x["path"].startswith("W4A16 auto")]
    if not r.get("kernels_timed", env.get("accelerator", False)):
        speeds = [x["vs_bf16"] for x in auto]
        ref = (f"{min(speeds):.2f}-{max(speeds):.2f}x bf16 jnp.dot over {len(speeds)} shapes"
               if speeds else "no rows")
        return [("kernel speed vs bf16 dot",
                 f"not measured: no accelerator (backend {backend}). On {backend} the timed "
                 f"'auto' path is the jnp reference (dequantize + XLA dot), not a Pallas kernel: "
                 f"{ref}")]
    return [(f"kernel speed vs bf16 dot ({env.get('device', backend)}): M {x['m']} K {x['k']} "
             f"N {x['n']}",
             f"{x['vs_bf16']:.2f}x bf16 jnp.dot ({x['ms']:.3f} ms, {x['tflops']:.2f} TFLOP/s; "
             f"{x['path']}; max rel diff {x['max_rel_diff']:.1e})") for x in auto]


def memory_rows(r: dict) -> list[tuple[str, str]]:
    return [(f"memory per expert, bf16 vs HiF4: {row['config']} {row['expert']}",
             f"bf16 {row['bf16_bytes'] / GB:.2f} GB, HiF4 {row['hif4_bytes'] / GB:.2f} GB "
             f"(packed linears {row['hif4_linears_bytes'] / GB:.2f} + bias/smoothing "
             f"{row['hif4_extras_bytes'] / GB:.3f} + protected bf16 "
             f"{row['protected_bf16_bytes'] / GB:.2f}); bf16 / HiF4 = "
             f"{row['bf16_over_hif4']:.2f}x") for row in r["rows"]]


def dmd_step_rows(r: dict) -> list[tuple[str, str]]:
    return [(f"DMD training speed ({_backend(r)}): toy, student steps {row['student_steps']}, "
             f"stage {row['stage']}",
             f"{row['iterations_per_s']:.2f} critic iterations/s (critic update "
             f"{row['critic_s']:.3f} s, generator update {row['gen_s']:.3f} s; "
             f"{row['gflop_per_s']:.1f} GFLOP/s)") for row in r["rows"]]


BUILDERS = {
    "bench.dit_forward": dit_forward_rows,
    "bench.sample": sample_rows,
    "bench.convert": convert_rows,
    "bench.quantize": quantize_rows,
    "bench.vae_decode": vae_decode_rows,
    "bench.kernels_interpret": kernels_interpret_rows,
    "bench.kernels": kernels_rows,
    "bench.memory": memory_rows,
    "bench.dmd_step": dmd_step_rows,
}


def outcome_rows(o: Outcome) -> list[tuple[str, str, str]]:
    """Rows for one bench: its claims, or one row saying why there are none."""
    source = f"`{o.module}`"
    if o.exit_code is None:
        return [(o.title, "not run (filtered out by --only)", source)]
    if o.result is None:
        why = f"exit {o.exit_code}" if o.exit_code else "exit 0 but no JSON results"
        last = o.stderr_tail.strip().splitlines()[-1:] or [""]
        detail = f": {last[0].strip()[:200]}" if last[0].strip() else ""
        return [(o.title, f"FAILED ({why}){detail}", source)]
    builder = BUILDERS.get(o.module)
    if builder is None:
        return [(o.title, "no summary builder for this bench (see its output below)", source)]
    try:
        rows = builder(o.result)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return [(o.title, f"results unreadable ({type(e).__name__}: {e})", source)]
    note = f" [bench exited {o.exit_code}]" if o.exit_code else ""
    if not rows:
        return [(o.title, f"no rows in the results{note}", source)]
    return [(claim, value + note, source) for claim, value in rows]


def summary_rows(outcomes: list[Outcome]) -> list[tuple[str, str, str]]:
    return [row for o in outcomes for row in outcome_rows(o)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_table(outcomes: list[Outcome]) -> str:
    lines = ["| claim | result | bench |", "|---|---|---|"]
    lines += [f"| {_cell(c)} | {_cell(v)} | {s} |" for c, v, s in summary_rows(outcomes)]
    return "\n".join(lines)


def render_report(outcomes: list[Outcome], *, date: str, cpu_count: int | None, host: str,
                  env: dict | None, quick: bool, command: str, seconds: float) -> str:
    """report.md: header, the summary table, then each bench's own printed output."""
    env = env or {}
    accel = env.get("accelerator")
    failed = [o.module for o in outcomes if o.failed]
    lines = [
        "# wanjax bench report", "",
        f"- date: {date}",
        f"- run: {'QUICK (small sizes, `--quick`)' if quick else 'full (default sizes)'}; "
        f"`{command}`; {seconds:.0f} s in all",
        f"- host: {host}; os.cpu_count() = {cpu_count}",
        f"- jax {env.get('jax', '?')}, backend {env.get('backend', '?')} "
        f"({env.get('device', '?')} x {env.get('device_count', '?')})",
        "- accelerator present: " + ("unknown" if accel is None else "yes" if accel else "no"),
        f"- failed benches: {', '.join(failed) if failed else 'none'}",
        "", "Every number below comes from the JSON results this run wrote next to this file.",
        "", "## Summary", "", summary_table(outcomes), "", "## Bench outputs",
    ]
    for o in outcomes:
        if o.exit_code is None:
            continue
        lines += ["", f"### {o.title}", "",
                  f"`python -m {' '.join(o.command)}`: {o.seconds:.0f} s, exit {o.exit_code}", "",
                  "```text", o.stdout.rstrip("\n"), "```"]
        if o.failed and o.stderr_tail.strip():
            lines += ["", "stderr (tail):", "", "```text", o.stderr_tail.rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"
