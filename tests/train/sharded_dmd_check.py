"""Run with 8 simulated CPU devices: DMD losses on one device vs a (fsdp=2, sequence=4) mesh.

Prints a JSON line {"single": [...], "sharded": [...]} of (gen_loss, critic_loss) per iteration.
"""

import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from train.dmd_config import DMDConfig  # noqa: E402
from train.dmd_step import init_state, make_steps  # noqa: E402
from train.trainer import stage_setup  # noqa: E402
from wanjax.config import DiTConfig  # noqa: E402
from wanjax.models.dit import WanDiT  # noqa: E402
from wanjax.parallel import make_mesh, parse_mesh, shard_params  # noqa: E402
from wanjax.sampling.loop import dit_apply  # noqa: E402

CFG = DiTConfig(dim=32, ffn_dim=64, num_heads=4, num_layers=1, in_dim=3, out_dim=3, text_dim=8,
                freq_dim=16, text_len=4, patch_size=(1, 2, 2))
SHAPE = (3, 2, 4, 8)  # 2 x 2 x 4 = 16 tokens over sequence=4
DMD = DMDConfig(iterations=4, batch_size=4, critic_ratio=2, lr_gen=1e-3, lr_critic=1e-3,
                compute_dtype="fp32", remat=True)


def teacher():
    m = WanDiT(CFG, rngs=nnx.Rngs(0))
    m.head.proj.kernel.set_value(jax.random.normal(jax.random.key(1), m.head.proj.kernel.shape))
    return m


def run(mesh=None):
    module = teacher()
    if mesh is not None:
        shard_params(module, mesh)
    gd, params = nnx.split(module)
    gd_train, _ = nnx.split(nnx.eval_shape(lambda: WanDiT(CFG, rngs=nnx.Rngs(0), remat=True)))
    setup = stage_setup(DMD, "high")
    gen_step, critic_step = make_steps(DMD, setup, dit_apply(gd_train), dit_apply(gd), SHAPE)
    state = init_state(DMD, params, params, jax.random.PRNGKey(0))
    ctx = jax.random.normal(jax.random.key(2), (4, 3, 8))
    neg = jnp.zeros_like(ctx)
    losses = []
    for it in range(DMD.iterations):
        row = [None, None]
        if it % DMD.critic_ratio == 0:
            state, m = gen_step(state, (params, None), (ctx, neg))
            row[0] = float(m["gen_loss"])
        state, m = critic_step(state, (params, None), (ctx, neg))
        row[1] = float(m["critic_loss"])
        losses.append(row)
    return losses


def main():
    single = run()
    mesh = make_mesh(parse_mesh("fsdp=2,sequence=4"))
    with jax.set_mesh(mesh):
        sharded = run(mesh)
    print(json.dumps({"single": single, "sharded": sharded}))


if __name__ == "__main__":
    main()
