"""Sampling the toy teacher with the project's jitted loop (`wanjax.sampling.loop`).

`teacher_config(steps, solver)` gives the evaluation settings of configs/toy.py: the 40-step
UniPC grid with CFG, or a few-step baseline on the warped student grid (`few_step_schedule`)
with the Euler or x0-renoise solver and the same guidance.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Float
from tqdm import tqdm

from configs import toy
from train.toy import world
from wanjax.models.dual_expert import DualExpertDiT
from wanjax.sampling.loop import SampleConfig, dit_apply, make_sampler

VIDEO_SHAPE = (3, toy.FRAMES, toy.HEIGHT, toy.WIDTH)


def teacher_config(
    steps: int = toy.TEACHER_STEPS,
    solver: str = "unipc",
    guide_high: float = toy.GUIDE_SCALE_HIGH,
    guide_low: float = toy.GUIDE_SCALE_LOW,
) -> SampleConfig:
    """UniPC/dpm++ on the flow grid for many steps; 'euler'/'x0_renoise' use the few-step grid."""
    if solver in ("euler", "x0_renoise"):
        if steps not in toy.FEW_STEP_TIMESTEPS:
            raise ValueError(
                f"few-step grids exist for {sorted(toy.FEW_STEP_TIMESTEPS)} steps, not {steps}"
            )
        return SampleConfig(
            shift=toy.FEW_STEP_SHIFT, solver=solver, guide_high=guide_high, guide_low=guide_low,
            boundary=toy.BOUNDARY, timesteps=toy.FEW_STEP_TIMESTEPS[steps],
        )
    return SampleConfig(
        num_steps=steps, shift=toy.SAMPLE_SHIFT, solver=solver, guide_high=guide_high,
        guide_low=guide_low, boundary=toy.BOUNDARY,
    )


def sample_videos(
    model: DualExpertDiT,
    prompts: Sequence[str],
    cfg: SampleConfig,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = False,
) -> Float[np.ndarray, "b 3 f h w"]:
    """One video per prompt, in batches; the noise of sample i depends only on (seed, i)."""
    gd_high, p_high = nnx.split(model.high)
    gd_low, p_low = nnx.split(model.low)
    sample = make_sampler(dit_apply(gd_high), dit_apply(gd_low), cfg)
    text_dim = model.cfg.high.text_dim
    noise_key, renoise_key = jax.random.split(jax.random.key(seed))
    out = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="sampling", disable=not progress):
        chunk = list(prompts[start : start + batch_size])
        n = len(chunk)
        chunk += chunk[-1:] * (batch_size - n)  # one compiled shape for every batch
        keys = jax.vmap(lambda i: jax.random.fold_in(noise_key, i))(
            jnp.arange(start, start + batch_size)
        )
        noise = jax.vmap(lambda k: jax.random.normal(k, VIDEO_SHAPE, jnp.float32))(keys)
        context = world.encode_prompts(chunk, text_dim)[0]
        negative = world.negative_context(batch_size, text_dim)
        key = jax.random.fold_in(renoise_key, start)
        x = sample(p_high, p_low, noise, context, negative, key)
        out.append(np.asarray(x)[:n])
    return np.concatenate(out, axis=0)
