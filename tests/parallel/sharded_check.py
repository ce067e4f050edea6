"""Run in a subprocess with 8 simulated CPU devices: sharded forward and sampling vs one device.

Prints one JSON line: {mesh: {"rel": ..., "all_to_all": bool}, "sampling": rel}.
"""

import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from wanjax.config import DiTConfig  # noqa: E402
from wanjax.models.dit import WanDiT  # noqa: E402
from wanjax.parallel import create_sharded, make_mesh, parse_mesh, shard_params  # noqa: E402
from wanjax.sampling.loop import SampleConfig, dit_apply, make_sampler  # noqa: E402

CFG = DiTConfig(dim=64, ffn_dim=128, num_heads=8, num_layers=2, text_dim=32, freq_dim=32,
                text_len=16)
MESHES = ("fsdp=8", "fsdp=2,tensor=2,sequence=2", "data=2,sequence=4")


def model(seed):
    m = WanDiT(CFG, rngs=nnx.Rngs(seed))
    head = m.head.proj.kernel
    head.set_value(jax.random.normal(jax.random.key(seed + 100), head.shape) * 0.1)
    return m


def forward(graphdef):
    return jax.jit(lambda st, x, t, c: nnx.merge(graphdef, st)(x, t, c))


def main():
    k = jax.random.split(jax.random.key(0), 3)
    # 3 x 3 x 5 = 45 tokens: not divisible by 2 or 4, so the padding path runs.
    x = jax.random.normal(k[0], (2, 16, 3, 6, 10))
    t = jnp.array([999, 300])
    c = jax.random.normal(k[1], (2, 7, 32))
    high, low = model(0), model(1)
    gd, st = nnx.split(high)
    ref = np.asarray(forward(gd)(st, x, t, c))
    out = {}
    for spec in MESHES:
        mesh = make_mesh(parse_mesh(spec))
        m = shard_params(nnx.clone(high), mesh)
        with jax.set_mesh(mesh):
            gd2, st2 = nnx.split(m)
            f = forward(gd2)
            hlo = f.lower(st2, x, t, c).compile().as_text()
            y = np.asarray(f(st2, x, t, c))
        out[spec] = {
            "rel": float(np.abs(y - ref).max() / np.abs(ref).max()),
            "all_to_all": "all-to-all" in hlo,
        }

    cfg = SampleConfig(num_steps=6)
    neg = jax.random.normal(k[2], (2, 5, 32))
    noise = x
    gl, sl = nnx.split(low)
    sample = make_sampler(dit_apply(gd), dit_apply(gl), cfg)
    expected = np.asarray(sample(st, sl, noise, c, neg, jax.random.key(0)))
    mesh = make_mesh(parse_mesh("fsdp=2,tensor=2,sequence=2"))
    h2, l2 = shard_params(nnx.clone(high), mesh), shard_params(nnx.clone(low), mesh)
    with jax.set_mesh(mesh):
        (gh, sh), (gl2, sl2) = nnx.split(h2), nnx.split(l2)
        sample = make_sampler(dit_apply(gh), dit_apply(gl2), cfg)
        got = np.asarray(sample(sh, sl2, noise, c, neg, jax.random.key(0)))
    out["sampling"] = float(np.abs(got - expected).max() / np.abs(expected).max())

    # Created directly sharded: each device holds 1/8 of an FSDP-sharded kernel.
    mesh = make_mesh(parse_mesh("fsdp=8"))
    created = create_sharded(lambda: WanDiT(CFG, rngs=nnx.Rngs(0)), mesh)
    q = created.blocks[0].self_attn.q.kernel.get_value()
    out["created_spec"] = str(q.sharding.spec)
    out["created_shard_shape"] = list(q.addressable_shards[0].data.shape)
    reference = WanDiT(CFG, rngs=nnx.Rngs(0)).blocks[0].self_attn.q.kernel.get_value()
    out["created_equal"] = bool(np.array_equal(np.asarray(q), np.asarray(reference)))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
