"""Acceptance 2: converting a checkpoint with several 100+ MB shards stays below 2x the largest
shard in peak resident memory (measured by `bench.convert` in a child process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_peak_rss_below_twice_the_largest_shard(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.convert", "--size-gb", "1", "--shard-mb", "400", "--json",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shards"] >= 3 and report["largest_shard_bytes"] > 300e6
    assert report["peak_rss_bytes"] < 2 * report["largest_shard_bytes"], report
    # the working set beyond the interpreter and its imports is well below one shard
    assert report["peak_rss_bytes"] - report["import_rss_bytes"] < report["largest_shard_bytes"]
