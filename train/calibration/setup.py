"""Shared set-up of the calibrate / evaluate commands: models, sampler settings, prompts, mesh."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from train.calibration.data import Batch, batches, make_world, read_prompts
from wanjax.io import checkpoint
from wanjax.loading import load_dit_module
from wanjax.models.dit import WanDiT
from wanjax.sampling.loop import SampleConfig

DEFAULT_STUDENT = "outputs/dmd/student"
EXPERTS = ("high", "low")


def resolve_student(path: str | None) -> Path:
    p = Path(path or DEFAULT_STUDENT)
    if not (p / checkpoint.MANIFEST).is_file():
        if path is None:
            raise FileNotFoundError(
                f"no student at the default {DEFAULT_STUDENT}: train the toy student first "
                "(`python -m train.dmd`) or pass --student PATH")
        raise FileNotFoundError(f"{p} is not a wanjax checkpoint (no {checkpoint.MANIFEST})")
    return p


def load_student(path: Path, mesh: Mesh | None = None
                 ) -> tuple[dict[str, WanDiT], SampleConfig, dict]:
    """The student's two experts (float32; restored into their shards on `mesh` when given) and
    the few-step settings from its manifest."""
    meta = checkpoint.read_manifest(path)
    student = meta.get("student")
    if not student or "sample_config" not in student:
        raise ValueError(f"{path} is not a DMD student checkpoint (its manifest has no "
                         "student.sample_config); `python -m train.dmd` writes one")
    sc = dict(student["sample_config"])
    if sc.get("timesteps") is not None:
        sc["timesteps"] = tuple(sc["timesteps"])
    experts = {e: load_dit_module(path, e, jnp.float32, mesh) for e in EXPERTS}
    return experts, SampleConfig(**sc), meta


def load_teacher(path: str | Path, mesh: Mesh | None = None) -> dict[str, WanDiT]:
    if not (Path(path) / checkpoint.MANIFEST).is_file():
        raise FileNotFoundError(f"teacher checkpoint {path} not found (no {checkpoint.MANIFEST})")
    return {e: load_dit_module(path, e, jnp.float32, mesh) for e in EXPERTS}


def default_teacher(meta: dict, world_kind: str) -> str | None:
    given = (meta.get("student") or {}).get("teacher")
    if given and Path(given, checkpoint.MANIFEST).is_file():
        return given
    if world_kind == "toy":
        from configs import toy

        return toy.TEACHER_PATH
    return given


def teacher_config(world_kind: str, boundary: float, steps: int = 40) -> SampleConfig:
    """The teacher's long CFG sampler: the toy world's settings, or the official A14B ones."""
    if world_kind == "toy":
        from configs import toy

        return SampleConfig(num_steps=steps, shift=toy.SAMPLE_SHIFT,
                            guide_high=toy.GUIDE_SCALE_HIGH, guide_low=toy.GUIDE_SCALE_LOW,
                            boundary=boundary)
    return SampleConfig(num_steps=steps, boundary=boundary)


def student_config(base: SampleConfig, n: int) -> SampleConfig:
    """The student's sampler at `n` steps: its own grid when `n` matches, else `n` raw timesteps
    evenly spaced from 1000 (the spacing of the trained 4-step grid) through the same shift,
    solver and routing."""
    if base.timesteps is None:
        return dataclasses.replace(base, num_steps=n)
    if n == len(base.timesteps):
        return base
    raw = tuple(float(v) for v in np.linspace(1000.0, 0.0, n + 1)[:-1])
    return dataclasses.replace(base, timesteps=raw)


def prompts_for(world_kind: str, world, prompts_file: str | None, count: int,
                offset: int = 0) -> list[str]:
    """`count` prompts: from the file, or spread evenly over the world's prompt list."""
    if prompts_file:
        return read_prompts(prompts_file)[:count] if count else read_prompts(prompts_file)
    pool = list(world.prompts)
    if count <= len(pool):
        idx = (np.linspace(0, len(pool) - 1, count).round().astype(int) + offset) % len(pool)
        return [pool[i] for i in idx]
    return [pool[(i + offset) % len(pool)] for i in range(count)]


def make_batches(world, prompts, seed: int, batch_size: int) -> list[Batch]:
    return batches(world, prompts, seed, batch_size)


def world_for(kind: str, student: dict[str, WanDiT], text_cache: str | None,
              latent_shape: str | None):
    shape = tuple(int(v) for v in latent_shape.split(",")) if latent_shape else None
    return make_world(kind, student["high"].cfg, text_cache, shape)


def mesh_for(spec: str) -> Mesh | None:
    """The mesh `--mesh SPEC` names (None for ''): made before loading, so that checkpoints are
    restored straight into their shards and a bad spec fails before any work."""
    if not spec:
        return None
    from wanjax.parallel.mesh import make_mesh, parse_mesh

    return make_mesh(parse_mesh(spec))


def mesh_context(mesh: Mesh | None, modules: list[WanDiT]):
    """Places the modules' params on the mesh (a no-op for params already there) and returns its
    context (a null one without a mesh)."""
    if mesh is None:
        return contextlib.nullcontext()
    from wanjax.parallel.rules import shard_params

    for m in modules:
        shard_params(m, mesh)
    return jax.set_mesh(mesh)
