"""Device meshes, logical-axis sharding rules and sequence-parallel attention."""

from wanjax.parallel.mesh import AXES, MeshConfig, make_mesh, parse_mesh
from wanjax.parallel.rules import create_sharded, logical_axes, param_shardings, shard_params

__all__ = [
    "AXES", "MeshConfig", "make_mesh", "parse_mesh", "logical_axes", "param_shardings",
    "shard_params", "create_sharded",
]
