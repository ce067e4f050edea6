"""`bench/kernels.py` runs on the CPU (reference path, said so) at a tiny shape."""

from __future__ import annotations

from bench.kernels import main


def test_bench_runs_on_cpu_and_says_reference(capsys, tmp_path):
    assert main(["--m", "1,20", "--k", "512", "--n", "128", "--repeats", "1",
                 "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "REFERENCE path" in out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or
            line.startswith("| 20 |")]
    assert len(rows) == 8
    assert all(line.split("|")[-2].strip() in ("-", "0.0e+00") for line in rows)
    assert (tmp_path / "rows.json").stat().st_size > 0
