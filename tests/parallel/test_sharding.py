"""Sharded execution equals single-device execution (8 simulated CPU devices, in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import a14b
from wanjax.memory import param_bytes_per_device, shape_mesh
from wanjax.parallel.mesh import MeshConfig, parse_mesh
from wanjax.parallel.rules import spec_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sharded_results():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("sharded_check.py"))],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["fsdp=8", "fsdp=2,tensor=2,sequence=2", "data=2,sequence=4"])
def test_sharded_forward_equals_single_device(sharded_results, mesh):
    assert sharded_results[mesh]["rel"] <= 1e-5
    # With a sequence axis, self-attention must really run Ulysses (all-to-all), not a gather.
    assert sharded_results[mesh]["all_to_all"] == ("sequence" in mesh)


def test_sharded_sampling_equals_unsharded(sharded_results):
    assert sharded_results["sampling"] <= 1e-5


def test_params_created_directly_sharded(sharded_results):
    assert sharded_results["created_spec"] == "P('fsdp', None)"  # tensor has size 1 here
    assert sharded_results["created_shard_shape"] == [8, 64]
    assert sharded_results["created_equal"]  # same values as an unsharded init with the seed


def test_a14b_fsdp8_param_bytes_match_arithmetic():
    count, per_device = param_bytes_per_device(a14b.EXPERT, shape_mesh(parse_mesh("fsdp=8"), 8))
    assert count == 14_288_491_584
    expected = 14_288_491_584 * 2 / 8
    # A few small tensors (biases, norms) are replicated, so allow 0.5% above the even split.
    assert expected <= per_device <= expected * 1.005


def test_spec_drops_axes_that_do_not_divide():
    mesh = shape_mesh(MeshConfig(data=1, fsdp=4, tensor=2, sequence=1), 8)
    assert spec_for((64, 64), ("embed", "heads"), mesh) == P("fsdp", "tensor")
    assert spec_for((6, 64), ("embed", "heads"), mesh) == P(None, "tensor")
    assert spec_for((6,), ("heads",), mesh) == P("tensor")
    assert spec_for((5,), ("heads",), mesh) == P(None)
    # parameters shard over fsdp and sequence together (ZeRO-3 over every rank)
    seq = shape_mesh(MeshConfig(data=1, fsdp=2, tensor=1, sequence=4), 8)
    assert spec_for((64, 64), ("embed", "heads"), seq) == P(("fsdp", "sequence"), None)


@pytest.mark.parametrize("bad", ["fsdp=x", "model=2", "fsdp=2,tensor"])
def test_bad_mesh_strings(bad):
    with pytest.raises(ValueError, match="bad mesh entry"):
        parse_mesh(bad)


def test_mesh_size_mismatch():
    with pytest.raises(ValueError, match="needs 6 devices"):
        MeshConfig(data=1, fsdp=3, tensor=2).sizes(8)
    assert MeshConfig(fsdp=-1, tensor=2).sizes(8) == (1, 4, 2, 1)
    assert np.prod(MeshConfig().sizes(8)) == 8
