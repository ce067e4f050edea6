"""One mesh abstraction with four named axes: data, fsdp, tensor, sequence.

- data:     pure data parallelism (replicated params).
- fsdp:     parameters sharded along their `embed` dimension, gathered per layer by XLA; the batch
            is split over data x fsdp.
- tensor:   heads and FFN width split across devices (Megatron style).
- sequence: tokens split across devices; self-attention switches to Ulysses all-to-all.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("data", "fsdp", "tensor", "sequence")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Axis sizes; one of them may be -1 to take the remaining devices."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    sequence: int = 1

    def sizes(self, num_devices: int) -> tuple[int, ...]:
        sizes = [self.data, self.fsdp, self.tensor, self.sequence]
        if sizes.count(-1) > 1:
            raise ValueError(f"at most one mesh axis may be -1, got {self}")
        if any(s == 0 or s < -1 for s in sizes):
            raise ValueError(f"mesh axis sizes must be positive (or -1), got {self}")
        fixed = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % fixed:
                raise ValueError(f"{num_devices} devices do not split into {self}")
            sizes[sizes.index(-1)] = num_devices // fixed
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"mesh {dict(zip(AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, "
                f"have {num_devices}"
            )
        return tuple(sizes)


def parse_mesh(spec: str) -> MeshConfig:
    """`"fsdp=2,tensor=2,sequence=2"` -> MeshConfig; unnamed axes default to 1 (fsdp to -1 if
    no size is named at all)."""
    if not spec.strip():
        return MeshConfig()
    values = {}
    for part in spec.split(","):
        name, _, size = part.partition("=")
        name = name.strip()
        if name not in AXES or not size.strip().lstrip("-").isdigit():
            raise ValueError(f"bad mesh entry {part!r}; expected AXIS=SIZE with AXIS in {AXES}")
        values[name] = int(size)
    defaults = {"data": 1, "fsdp": 1, "tensor": 1, "sequence": 1}
    return MeshConfig(**{**defaults, **values})


def make_mesh(cfg: MeshConfig = MeshConfig(), devices=None) -> Mesh:  # noqa: B008
    """A `Mesh` over `devices` (default: all) with axes `AXES`, contiguous devices innermost."""
    devices = jax.devices() if devices is None else list(devices)
    sizes = cfg.sizes(len(devices))
    return Mesh(np.asarray(devices).reshape(sizes), AXES)


def axis_size(name: str) -> int:
    """Size of a mesh axis in the current (abstract) mesh context, 1 when absent."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or name not in mesh.axis_names:
        return 1
    return mesh.shape[name]
