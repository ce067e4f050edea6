"""A real two-process run on this machine: jax.distributed over loopback with gloo collectives."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from two_process_model import inputs, model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_single_process(tmp_path):
    port, out = _free_port(), tmp_path / "y.npy"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{HERE}", "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "two_process_check.py"), str(port), str(i),
                          str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    m = model()
    gd, st = nnx.split(m)
    expected = np.asarray(jax.jit(lambda st, *a: nnx.merge(gd, st)(*a))(st, *inputs()))
    got = np.load(out)
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-5
