"""Run in a subprocess with 4 simulated CPU devices: calibration under a mesh vs one device.

Prints one JSON line with the largest relative differences.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from helpers import STUDENT_CFG, TINY, random_student  # noqa: E402

from train.calibration.data import batches, synthetic_world  # noqa: E402
from train.calibration.evaluation import rollout  # noqa: E402
from train.calibration.pipeline import CalibrationOptions, calibrate  # noqa: E402
from train.calibration.setup import mesh_context, mesh_for  # noqa: E402
from train.calibration.stats import collect_stats  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run(mesh_spec):
    student = random_student(4)
    world = synthetic_world(TINY)
    bs = batches(world, world.prompts[:4], seed=2, batch_size=4)
    ctx = mesh_context(mesh_for(mesh_spec), list(student.values()))
    opts = CalibrationOptions(algorithm="smooth+gptq", protect=("blocks.0",), samples_per_call=8)
    with ctx:
        stats, _ = collect_stats(student, STUDENT_CFG, bs[0].noise, bs[0].context, None,
                                 bs[0].key)
        quant, rep = calibrate(student, STUDENT_CFG, bs, opts, log=lambda m: None)
        final = rollout(quant, STUDENT_CFG, bs, keep=False).final
        sharded = any(len(v.get_value().sharding.device_set) > 1
                      for _, v in nnx.to_flat_state(nnx.state(student["high"], nnx.Param)))
    return stats, rep, np.asarray(final), sharded


def main():
    ref_stats, ref_rep, ref_final, _ = run("")
    out = {}
    for spec in ("fsdp=2,sequence=2",):
        stats, rep, final, sharded = run(spec)
        diffs = []
        for e in ("high", "low"):
            for p, s in ref_stats[e].layers.items():
                t = stats[e].layers[p]
                diffs += [rel(t.absmax, s.absmax), rel(t.xtx, s.xtx)]
                assert t.count == s.count, (p, t.count, s.count)
        out[spec] = {
            "sharded": sharded,
            "stats": max(diffs),
            "protected_equal": all(rep["experts"][e]["protected"] ==
                                   ref_rep["experts"][e]["protected"] for e in ("high", "low")),
            "final": rel(final, ref_final),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
