"""`load_dit_module(..., mesh=)` and `train.dmd.load_networks(..., mesh)` restore every parameter
straight into the sharding the rules give it (4 simulated CPU devices, in a subprocess), with the
values that were saved."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from configs import toy
from wanjax.io import checkpoint
from wanjax.io.params import flat_params
from wanjax.models.dual_expert import DualExpertDiT

_CHECK = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from configs import dmd_toy
    from train import dmd
    from wanjax.loading import load_dit_module
    from wanjax.parallel.mesh import make_mesh, parse_mesh
    from wanjax.parallel.rules import param_shardings

    path, saved = sys.argv[1], np.load(sys.argv[2])
    mesh = make_mesh(parse_mesh("fsdp=4"))
    module = load_dit_module(path, "low", jnp.float32, mesh=mesh)
    want = {".".join(map(str, p)): v.get_value()
            for p, v in nnx.to_flat_state(param_shardings(module, mesh))}
    split = 0
    for p, v in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        name, a = ".".join(map(str, p)), v.get_value()
        assert a.sharding == want[name], (name, a.sharding, want[name])
        np.testing.assert_array_equal(np.asarray(a), saved[name], err_msg=name)
        split += a.addressable_shards[0].data.shape != a.shape
    nets = dmd.load_networks(path, dmd_toy.DMD, mesh)
    teacher = [v.get_value() for _, v in nnx.to_flat_state(nets.teacher["high"])]
    print("split", split, "teacher_split",
          sum(len(a.sharding.device_set) == 4 and a.addressable_shards[0].data.shape != a.shape
              for a in teacher))
""")


def test_experts_load_straight_into_their_shards(tmp_path):
    model = DualExpertDiT(toy.TEACHER, rngs=nnx.Rngs(0))
    comps = {}
    for e in ("high", "low"):
        m = model.expert(e)
        checkpoint.save_params(tmp_path / f"dit_{e}", flat_params(m))
        comps[f"dit_{e}"] = {"config": checkpoint.dit_config_to_json(toy.EXPERT),
                             "params": f"dit_{e}"}
    checkpoint.write_manifest(tmp_path, {"dtype": "float32", "boundary": toy.BOUNDARY,
                                         "components": comps, "world": "toy"})
    saved = {k: np.asarray(jax.device_get(v)) for k, v in flat_params(model.expert("low")).items()}
    np.savez(tmp_path / "saved.npz", **saved)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run(
        [sys.executable, "-c", _CHECK, str(tmp_path), str(tmp_path / "saved.npz")],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2],
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    assert int(words[words.index("split") + 1]) > 10  # the big kernels really are split
    assert int(words[words.index("teacher_split") + 1]) > 10
