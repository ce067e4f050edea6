"""One of two CPU processes joined by jax.distributed (gloo): a sharded forward of the tiny DiT.

Usage: two_process_check.py PORT PROCESS_ID OUT.npy
"""

import sys

import jax

from wanjax.parallel.distributed import global_array, initialize, to_host

port, pid, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
initialize("explicit", f"127.0.0.1:{port}", 2, pid)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from two_process_model import inputs, model  # noqa: E402

from wanjax.parallel import make_mesh, param_shardings, parse_mesh  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
assert jax.device_count() == 2 and jax.local_device_count() == 1

m = model()
mesh = make_mesh(parse_mesh("fsdp=2"))
shardings = param_shardings(m, mesh)
state = nnx.state(m, nnx.Param)
placed = jax.tree.map(
    lambda v, s: v.replace(global_array(np.asarray(v.get_value()), s.get_value())),
    state, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable),
)
nnx.update(m, placed)
x, t, c = inputs()
replicated = NamedSharding(mesh, P())
x, t, c = (global_array(np.asarray(a), replicated) for a in (x, t, c))
with jax.set_mesh(mesh):
    gd, st = nnx.split(m)
    y = jax.jit(lambda st, x, t, c: nnx.merge(gd, st)(x, t, c))(st, x, t, c)
    y = to_host(y)
if pid == 0:
    np.save(out_path, y)
print("process", pid, "done", jnp.asarray(y).shape)
