"""`python -m wanjax.demo`: prompt to mp4 through the whole JAX inference path, on random weights.

A tiny dual-expert DiT with the A14B layout and a tiny Wan2.1-layout VAE, both randomly
initialised, sampled with the official settings (UniPC, 40 steps, shift 12, CFG 4.0 / 3.0,
expert switch at t = 875) and decoded to an mp4. The picture is noise by construction: this run
checks the machinery (jitted loop, expert routing, CFG, streaming VAE decode, video writing) on
a CPU in about a minute. The toy-world pipeline (`python -m train.demo`) is the trained demo.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wanjax.config import DiTConfig
from wanjax.io.video import write_mp4, write_sidecar
from wanjax.models.dit import WanDiT
from wanjax.models.vae import VAEConfig, WanVAE, vae_from_flat_params
from wanjax.sampling.loop import SampleConfig, dit_apply, make_sampler

DIT = DiTConfig(dim=64, ffn_dim=128, num_heads=4, num_layers=2, in_dim=4, out_dim=4,
                text_dim=32, freq_dim=32, text_len=16)


def random_vae(cfg: VAEConfig, seed: int) -> WanVAE:
    """Random weights without the slow eager initialiser: shapes from `eval_shape`."""
    abstract = nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
    flat = {}
    for i, (path, var) in enumerate(nnx.to_flat_state(nnx.state(abstract, nnx.Param))):
        fan_in = int(np.prod(var.shape[:-1])) or 1
        scale = 1.0 / np.sqrt(fan_in) if len(var.shape) > 1 else 1.0
        value = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), i), var.shape)
        flat[".".join(map(str, path))] = value * scale if len(var.shape) > 1 else jnp.ones(var.shape)
    return vae_from_flat_params(cfg, flat)


def prompt_context(prompt: str, cfg: DiTConfig) -> np.ndarray:
    """A stand-in text embedding: deterministic in the prompt (no text encoder in this demo)."""
    rng = np.random.default_rng(abs(hash(prompt.encode().hex())) % 2**32)
    ctx = np.zeros((1, cfg.text_len, cfg.text_dim), np.float32)
    ctx[0, :8] = rng.standard_normal((8, cfg.text_dim))
    return ctx


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m wanjax.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = "(default: %(default)s)"
    p.add_argument("--prompt", default="a red fox runs across a snowy field",
                   help=f"the prompt (its hash seeds a stand-in text embedding) {d}")
    p.add_argument("--frames", type=int, default=17, help=f"4n+1 frames {d}")
    p.add_argument("--size", type=int, default=64, help=f"square frame size, multiple of 16 {d}")
    p.add_argument("--steps", type=int, default=40, help=f"UniPC steps {d}")
    p.add_argument("--seed", type=int, default=0, help=f"weights and noise seed {d}")
    p.add_argument("--out", default="outputs/demo_tiny", help=f"output folder {d}")
    args = p.parse_args(argv)
    if (args.frames - 1) % 4 or args.frames < 1 or args.size % 16 or args.steps < 1:
        print("error: --frames must be 4n+1, --size a multiple of 16, --steps >= 1",
              file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    high, low = (WanDiT(DIT, rngs=nnx.Rngs(s)) for s in (args.seed, args.seed + 1))
    for m in (high, low):  # the head is zero-initialised; give it weights so the loop does work
        m.head.proj.kernel.set_value(
            0.05 * jax.random.normal(jax.random.PRNGKey(7), m.head.proj.kernel.shape))
    vae = random_vae(VAEConfig.tiny(), args.seed)
    (gh, ph), (gl, pl) = nnx.split(high), nnx.split(low)
    cfg = SampleConfig(num_steps=args.steps)
    sample = make_sampler(dit_apply(gh), dit_apply(gl), cfg)
    latent = (1, DIT.in_dim, (args.frames - 1) // 4 + 1, args.size // 8, args.size // 8)
    noise = jax.random.normal(jax.random.PRNGKey(args.seed), latent)
    ctx, neg = prompt_context(args.prompt, DIT), prompt_context("", DIT)
    latents = sample(ph, pl, noise, ctx, neg, jax.random.PRNGKey(args.seed + 1))
    video = np.asarray(vae.decode(latents))[0]
    out = Path(args.out) / "sample.mp4"
    write_mp4(out, video, fps=16, scale=4)
    seconds = time.perf_counter() - t0
    write_sidecar(out, {"prompt": args.prompt, "sample_config": str(cfg), "high_noise_steps": cfg.num_high_steps(), "seconds": seconds,
                        "weights": "random (machinery check)"})
    print(f"wrote {out} ({video.shape[1]} frames {video.shape[2]}x{video.shape[3]}, "
          f"{cfg.num_high_steps()} high-noise + {args.steps - cfg.num_high_steps()} low-noise "
          f"steps) in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
