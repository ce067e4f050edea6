"""`bench.run_all`'s report: the summary table from hand-made JSON results (a failed bench, a bench
filtered out, with and without an accelerator), the runner end to end on a tiny bench and a
broken one, and the interpret-mode kernel bench at its smallest shape."""

from __future__ import annotations

import json

import pytest

from bench import run_all
from bench.kernels_interpret import main as interpret_main
from bench.summary import Outcome, render_report, summary_rows, summary_table

CPU = {"backend": "cpu", "device": "cpu", "accelerator": False, "jax": "0.0.test"}
GPU = {"backend": "gpu", "device": "NVIDIA H200", "accelerator": True, "jax": "0.0.test"}


def _result(rows, env=CPU, **extra) -> dict:
    return {"bench": "x", "environment": env, "args": {}, "rows": rows, **extra}


def _kernel_rows(ms=(1, 16)) -> list[dict]:
    rows = []
    for i, m in enumerate(ms):
        rows += [
            dict(m=m, k=512, n=256, path="bf16 jnp.dot", ms=1.0, tflops=0.1, vs_bf16=1.0,
                 max_rel_diff=None),
            dict(m=m, k=512, n=256, path="W4A16 auto (x)", ms=0.5, tflops=0.2,
                 vs_bf16=1.25 + i, max_rel_diff=0.0),
            dict(m=m, k=512, n=256, path="HiF4 act quant only (5% of W4A16)", ms=0.1,
                 tflops=None, vs_bf16=9.0, max_rel_diff=None),
        ]
    return rows


def _outcomes() -> list[Outcome]:
    def done(module, result, code=0):
        return Outcome(module, f"title of {module}", [module], code, result, f"{module} out\n")

    return [
        done("bench.dit_forward", _result([dict(config="tiny", jax_s=0.5, torch_s=2.0,
                                                compile_s=1.0, rel_err=1e-6,
                                                torch_over_jax=4.0)])),
        done("bench.sample", _result([dict(config="tiny", cfg_mode="batched", steps=2,
                                           compile_s=3.25, step_s=0.0123, peak_mb=11.5)])),
        done("bench.convert", _result([dict(
            convert_mb_per_s=123.4, source_bytes=440e6, dtype="bf16", peak_rss_bytes=487e6,
            peak_over_largest_shard=1.11, load_mb_per_s=578.0)], claim_max_peak_over_shard=2.0)),
        Outcome("bench.quantize", "HiF4 fake-quant throughput", ["bench.quantize"], 1, None,
                "", "Traceback (most recent call last):\nRuntimeError: torch exploded\n"),
        Outcome("bench.vae_decode", "VAE decode memory", ["bench.vae_decode"]),  # not run
        done("bench.kernels_interpret", _result([
            dict(backend="tpu", variant="streaming", m=1, k=512, n=256,
                 max_err_over_bound=0.0123, passed=True),
            dict(backend="tpu", variant="streaming", m=16, k=640, n=256,
                 max_err_over_bound=0.0456, passed=True),
            dict(backend="gpu", variant="fused", m=1, k=512, n=256, max_err_over_bound=1.5,
                 passed=False),
        ]), code=1),
        done("bench.kernels", _result(_kernel_rows(), kernels_timed=False)),
        done("bench.memory", _result([dict(
            config="a14b", expert="high", bf16_bytes=28.58e9, hif4_bytes=8.39e9,
            hif4_linears_bytes=7.9e9, hif4_extras_bytes=0.014e9, protected_bf16_bytes=0.47e9,
            bf16_over_hif4=28.58 / 8.39)])),
        done("bench.dmd_step", _result([dict(
            student_steps="1000,500", stage="high", critic_s=0.65, gen_s=0.7,
            iterations_per_s=1.27, gflop_per_s=26.3, critic_gflop=15.9, gen_gflop=23.7)])),
    ]


def _rows_by_source() -> dict[str, list[tuple[str, str]]]:
    by = {}
    for claim, value, source in summary_rows(_outcomes()):
        by.setdefault(source.strip("`"), []).append((claim, value))
    return by


def test_every_claim_gets_a_row_with_numbers_from_the_json():
    by = _rows_by_source()
    assert "4.00x" in by["bench.dit_forward"][0][1] and "tiny" in by["bench.dit_forward"][0][0]
    assert "compile 3.2 s, 0.0123 s/step" in by["bench.sample"][0][1]
    convert = by["bench.convert"][0][1]
    assert "123 MB/s" in convert and "1.11x the largest shard (claim < 2: pass)" in convert
    memory = by["bench.memory"][0][1]
    assert "bf16 28.58 GB, HiF4 8.39 GB" in memory and "3.41x" in memory
    (claim, value), = by["bench.dmd_step"]
    assert "student steps 1000,500, stage high" in claim
    assert "1.27 critic iterations/s (critic update 0.650 s, generator update 0.700 s" in value


def test_failed_and_not_run_benches_say_so():
    by = _rows_by_source()
    assert by["bench.quantize"] == [("HiF4 fake-quant throughput",
                                     "FAILED (exit 1): RuntimeError: torch exploded")]
    assert by["bench.vae_decode"][0][1] == "not run (filtered out by --only)"
    outcomes = _outcomes()
    assert [o.module for o in outcomes if o.failed] == ["bench.quantize",
                                                       "bench.kernels_interpret"]
    no_json = Outcome("bench.memory", "memory", ["bench.memory"], 0, None)
    assert no_json.failed
    assert "exit 0 but no JSON" in summary_rows([no_json])[0][1]


def test_interpret_rows_per_backend_with_worst_ratio_and_verdict():
    tpu, gpu = _rows_by_source()["bench.kernels_interpret"]
    assert tpu[0] == "kernel interpret-mode correctness: tpu (streaming)"
    assert tpu[1].startswith("max error / bound 0.046, pass; 2 shapes (M 1/16, K 512/640, N 256)")
    assert "FAIL (1 of 1 shapes)" in gpu[1] and gpu[1].endswith("[bench exited 1]")


def test_kernel_speed_without_accelerator_is_not_measured():
    (claim, value), = _rows_by_source()["bench.kernels"]
    assert claim == "kernel speed vs bf16 dot"
    assert value.startswith("not measured: no accelerator (backend cpu)")
    assert "jnp reference" in value and "1.25-2.25x" in value


def test_kernel_speed_with_accelerator_has_a_row_per_shape():
    result = _result(_kernel_rows((1, 16, 512)), env=GPU, kernels_timed=True)
    rows = summary_rows([Outcome("bench.kernels", "k", ["bench.kernels"], 0, result)])
    assert [c for c, _, _ in rows] == [
        f"kernel speed vs bf16 dot (NVIDIA H200): M {m} K 512 N 256" for m in (1, 16, 512)]
    assert rows[2][1].startswith("3.25x bf16 jnp.dot (0.500 ms")


def test_unreadable_results_do_not_crash_the_table():
    broken = Outcome("bench.sample", "sampling", ["bench.sample"], 0, _result([{"config": "x"}]))
    assert "results unreadable (KeyError" in summary_rows([broken])[0][1]
    cell = summary_table([Outcome("bench.x", "a | b", ["bench.x"])])
    assert "a \\| b" in cell


def test_report_header_and_outputs():
    text = render_report(_outcomes(), date="2000-01-01", cpu_count=2, host="Linux-test",
                         env=CPU, quick=True, command="python -m bench.run_all --quick",
                         seconds=12.0)
    assert "QUICK" in text and "os.cpu_count() = 2" in text and "Linux-test" in text
    assert "jax 0.0.test, backend cpu" in text and "accelerator present: no" in text
    assert "failed benches: bench.quantize, bench.kernels_interpret" in text
    assert text.count("| claim | result | bench |") == 1
    assert "bench.memory out" in text and "RuntimeError: torch exploded" in text
    assert "### VAE decode memory" not in text  # not run: no output section


def test_run_all_end_to_end_with_a_failing_bench(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_all, "BENCHES", (
        ("bench.memory", "memory", ["--config", "tiny"]),
        ("bench.no_such_bench", "broken", []),
    ))
    assert run_all.main(["--quick", "--out", str(tmp_path)]) == 1
    report = (tmp_path / "report.md").read_text()
    result = json.loads((tmp_path / "memory.json").read_text())
    assert result["bench"] == "bench.memory" and result["rows"][0]["config"] == "tiny"
    assert "memory per expert, bf16 vs HiF4: tiny high" in report
    assert "| broken | FAILED (exit 1)" in report
    assert "# weight memory per expert, tiny" in capsys.readouterr().out  # streamed too
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nothing_matches", "--out", str(tmp_path)])


def test_interpret_bench_smallest_shape(tmp_path, capsys):
    path = tmp_path / "interpret.json"
    assert interpret_main(["--m", "1", "--k", "512", "--n", "256", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert [r["backend"] for r in rows] == ["tpu", "gpu"]
    assert all(r["passed"] and 0 <= r["max_err_over_bound"] <= 1 for r in rows)
    assert "| tpu | streaming | 1 | 512 | 256 |" in capsys.readouterr().out
