"""Multi-host start-up: `jax.distributed.initialize` driven by flags or environment variables.

On TPU pods and SLURM/Open MPI clusters JAX discovers the coordinator itself (`--distributed
auto`). Elsewhere pass the coordinator address, process count and id, as flags or as
`WANJAX_COORDINATOR`, `WANJAX_NUM_PROCESSES`, `WANJAX_PROCESS_ID`. CPU processes use gloo
collectives. Only process 0 writes videos, logs and reports (`is_main_process`).
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from wanjax.argtypes import nonnegative_int, positive_int


def add_distributed_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host")
    group.add_argument("--distributed", choices=("off", "auto", "explicit"), default="off",
                       help="off: one process; auto: let JAX discover the cluster (TPU pods, "
                            "SLURM); explicit: use the coordinator flags/env below "
                            "(default: %(default)s)")
    group.add_argument("--coordinator", default=os.environ.get("WANJAX_COORDINATOR"),
                       help="host:port of process 0 (env WANJAX_COORDINATOR; "
                            "default: %(default)s)")
    group.add_argument("--num-processes", type=positive_int,
                       default=_env_int("WANJAX_NUM_PROCESSES"),
                       help="process count (env WANJAX_NUM_PROCESSES; default: %(default)s)")
    group.add_argument("--process-id", type=nonnegative_int,
                       default=_env_int("WANJAX_PROCESS_ID"),
                       help="this process (env WANJAX_PROCESS_ID; default: %(default)s)")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def initialize(mode: str = "off", coordinator: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> None:
    """Joins the process group (before any other JAX call); a no-op for mode 'off'."""
    if mode == "off":
        return
    if jax.config.jax_platforms in (None, "", "cpu") and mode == "explicit":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if mode == "auto":
        jax.distributed.initialize()
        return
    missing = [n for n, v in (("--coordinator", coordinator), ("--num-processes", num_processes),
                              ("--process-id", process_id)) if v is None]
    if missing:
        raise ValueError(f"--distributed explicit needs {', '.join(missing)} (or their env vars)")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def initialize_from_args(args: argparse.Namespace) -> None:
    initialize(args.distributed, args.coordinator, args.num_processes, args.process_id)


def is_main_process() -> bool:
    return jax.process_index() == 0


def to_host(x: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-process) global array, on every process."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def global_array(value: np.ndarray, sharding) -> jax.Array:
    """A global array from a host value every process holds (only local shards are copied)."""
    return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])
