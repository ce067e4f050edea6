"""The group-per-orbax-checkpoint format: round trips, key checks, and sharded restores."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest

from wanjax.io import checkpoint


def _flat(rng):
    return {
        "blocks.0.attn.q.kernel": rng.standard_normal((8, 4)).astype(ml_dtypes.bfloat16),
        "blocks.0.attn.q.bias": rng.standard_normal(4).astype(np.float32),
        "blocks.1.attn.q.kernel": rng.standard_normal((8, 4)).astype(np.float32),
        "head.modulation": rng.standard_normal((1, 2, 4)).astype(np.float32),
    }


def test_groups():
    assert checkpoint.group_of("blocks.7.ffn.fc1.kernel") == "blocks.7"
    assert checkpoint.group_of("time_projection.kernel") == "time_projection"
    assert checkpoint.group_of("encoder.blocks.3.norm.scale") == "encoder.blocks.3"
    assert checkpoint.group_of("head") == "head"


def test_round_trip_as_stored_and_cast(tmp_path):
    flat = _flat(np.random.default_rng(0))
    checkpoint.save_params(tmp_path / "p", flat)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "blocks.0", "blocks.1", "head", "index.json"
    ]
    stored = {k: v for _, g in checkpoint.iter_param_groups(tmp_path / "p") for k, v in g.items()}
    for k, v in flat.items():
        assert stored[k].dtype == v.dtype and stored[k].tobytes() == v.tobytes()
    abstract = {k: jax.ShapeDtypeStruct(v.shape, np.float32) for k, v in flat.items()}
    restored = checkpoint.load_params(tmp_path / "p", abstract)
    for k, v in flat.items():
        assert isinstance(restored[k], jax.Array) and restored[k].dtype == np.float32
        np.testing.assert_array_equal(np.asarray(restored[k]), v.astype(np.float32))


def test_key_and_shape_mismatches_are_clear(tmp_path):
    flat = _flat(np.random.default_rng(0))
    checkpoint.save_params(tmp_path / "p", flat)
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}
    with pytest.raises(ValueError, match=r"missing \['extra'\], unexpected \['head.modulation'\]"):
        wrong = {**abstract, "extra": abstract["head.modulation"]}
        del wrong["head.modulation"]
        checkpoint.load_params(tmp_path / "p", wrong)
    with pytest.raises(ValueError, match=r"stored with shape \(8, 4\), the model expects \(4, 8\)"):
        transposed = jax.ShapeDtypeStruct((4, 8), np.float32)
        checkpoint.load_params(tmp_path / "p", {**abstract, "blocks.1.attn.q.kernel": transposed})
    (tmp_path / "p" / "index.json").unlink()  # an interrupted write has no index
    with pytest.raises(FileNotFoundError, match="index.json"):
        checkpoint.load_params(tmp_path / "p", abstract)


def test_old_format_version_is_refused(tmp_path):
    (tmp_path / "wanjax.json").write_text(json.dumps({"format": "wanjax", "version": 1}))
    with pytest.raises(ValueError, match="re-convert"):
        checkpoint.read_manifest(tmp_path)


_SHARDED = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from wanjax.io import checkpoint
    path = sys.argv[1]
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    specs = {"blocks.0.attn.q.kernel": P("model", None), "blocks.0.attn.q.bias": P("model"),
             "blocks.1.attn.q.kernel": P(None, "data"), "head.modulation": P()}
    index = checkpoint.read_index(path)
    abstract = {k: jax.ShapeDtypeStruct(tuple(v["shape"]), np.float32,
                                        sharding=NamedSharding(mesh, specs[k]))
                for k, v in index.items()}
    out = checkpoint.load_params(path, abstract)
    for k, a in out.items():
        assert a.sharding == abstract[k].sharding, (k, a.sharding)
        shard = a.addressable_shards[0].data.shape
        print(k, tuple(a.shape), shard, float(np.asarray(a, np.float64).sum()))
""")


def test_restores_each_leaf_directly_into_its_sharding(tmp_path):
    """On a 2x2 mesh of CPU devices every leaf arrives with the sharding of its abstract leaf."""
    flat = _flat(np.random.default_rng(1))
    checkpoint.save_params(tmp_path / "p", flat)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run(
        [sys.executable, "-c", _SHARDED, str(tmp_path / "p")], capture_output=True, text=True,
        env=env, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "(8, 4) (4, 4)" in lines["blocks.0.attn.q.kernel"]  # rows split over "model"
    assert "(8, 4) (8, 2)" in lines["blocks.1.attn.q.kernel"]  # columns split over "data"
    for k, v in flat.items():
        assert float(lines[k].split()[-1]) == pytest.approx(float(v.astype(np.float64).sum()))
