"""The A14B DMD step from shapes alone: lower it for a device mesh without allocating anything.

Used by the lowering test (tests/train/test_dmd_scale.py): every parameter, optimizer state
and input is a `jax.ShapeDtypeStruct` carrying its `NamedSharding` on an `AbstractMesh`, so the
14B-parameter networks never exist in memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from train.dmd_config import DMDConfig
from train.dmd_step import TrainState, init_state, make_steps
from train.trainer import stage_setup
from wanjax.config import DiTConfig, Precision
from wanjax.models.dit import WanDiT
from wanjax.parallel.mesh import AXES, MeshConfig
from wanjax.parallel.rules import logical_axes, spec_for
from wanjax.sampling.loop import dit_apply


def abstract_mesh(cfg: MeshConfig, num_devices: int) -> AbstractMesh:
    sizes = cfg.sizes(num_devices)
    return AbstractMesh(sizes, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def _sharded_params(dit: DiTConfig, prec: Precision, mesh: AbstractMesh, remat: bool):
    """(graphdef, params as sharded ShapeDtypeStructs)."""
    graphdef, state = nnx.split(nnx.eval_shape(
        lambda: WanDiT(dit, prec, rngs=nnx.Rngs(0), remat=remat)))

    def struct(path, var):
        name = ".".join(map(str, path))
        spec = spec_for(var.shape, logical_axes(name, len(var.shape)), mesh)
        return var.replace(jax.ShapeDtypeStruct(var.shape, var.dtype,
                                                sharding=NamedSharding(mesh, spec)))

    return graphdef, nnx.map_state(struct, state)


def _like(tree, mesh):
    """Optimizer-state structs shaped like `tree`, sharded like the parameter they track."""
    def one(x):
        sharding = getattr(x, "sharding", None) or NamedSharding(mesh, P())
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(one, tree)


def lower_dmd_step(dit: DiTConfig, cfg: DMDConfig, mesh_cfg: MeshConfig, num_devices: int,
                   latent_shape: tuple[int, ...], text_len: int = 512, stage: str = "high",
                   which: str = "critic", platform: str = "cuda"):
    """Lowers the phased stage's critic (or generator) update; returns the `Lowered` object."""
    mesh = abstract_mesh(mesh_cfg, num_devices)
    compute = jnp.bfloat16 if cfg.compute_dtype == "bf16" else jnp.float32
    with jax.sharding.use_abstract_mesh(mesh):
        gd_train, params = _sharded_params(dit, Precision(jnp.float32, compute), mesh, cfg.remat)
        gd_real, real = _sharded_params(dit, Precision(jnp.bfloat16, compute), mesh, False)
        state = jax.eval_shape(lambda p: init_state(cfg, p, p, jax.random.PRNGKey(0)), params)
        state = TrainState(
            gen=params, critic=params, ema=params,
            gen_opt=_match_opt(state.gen_opt, params, mesh),
            critic_opt=_match_opt(state.critic_opt, params, mesh),
            step=jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P())),
            gen_updates=jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P())),
            key=jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=NamedSharding(mesh, P())),
        )
        setup = stage_setup(cfg, stage)
        gen_step, critic_step = make_steps(cfg, setup, dit_apply(gd_train), dit_apply(gd_real),
                                           latent_shape)
        batch_spec = P(("data", "fsdp"), None, None)
        ctx = jax.ShapeDtypeStruct((cfg.batch_size, text_len, dit.text_dim), jnp.float32,
                                   sharding=NamedSharding(mesh, batch_spec))
        frozen_gen = real if stage == "low" else None
        if setup.stage.crosses(cfg.boundary, cfg.loss_shift):  # scores routed to both experts
            real = {"high": real, "low": real}
        step = critic_step if which == "critic" else gen_step
        return step.trace(state, (real, frozen_gen), (ctx, ctx)).lower(lowering_platforms=(platform,))


def _match_opt(opt_state, params, mesh):
    """Gives every optimizer leaf that mirrors a parameter that parameter's sharding."""
    flat_params = {leaf.shape: leaf.sharding for leaf in jax.tree.leaves(params)}

    def one(x):
        sharding = flat_params.get(x.shape) if x.ndim else None
        return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                    sharding=sharding or NamedSharding(mesh, P()))

    return jax.tree.map(one, opt_state)
