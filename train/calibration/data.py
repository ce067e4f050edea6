"""Where calibration and evaluation prompts, contexts and noise come from.

- `toy`: the DMD toy world (train/toy/world.py), picked automatically for a toy-sized student.
- `cache`: a real world from a text-embedding cache (`--text-cache`, as `python -m train.dmd`).
- `synthetic`: seeded random contexts per prompt, for tests and shape checks on random models
  (e.g. the tiny A14B-shaped config); its numbers say nothing about quality.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from train.data import FunctionContexts
from train.world import World, cached_world
from wanjax.config import DiTConfig

WORLDS = ("auto", "toy", "cache", "synthetic")


def is_toy(cfg: DiTConfig) -> bool:
    from configs import toy

    return cfg.in_dim == toy.EXPERT.in_dim and cfg.text_dim == toy.TEXT_DIM and (
        cfg.patch_size == toy.EXPERT.patch_size)


def synthetic_world(cfg: DiTConfig, latent_fhw: tuple[int, int, int] = (2, 4, 4),
                    num_prompts: int = 16) -> World:
    """Seeded random contexts (4 tokens per prompt, a fixed hash of the text), small latents."""
    def encode(prompts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(prompts), 4, cfg.text_dim), np.float32)
        for i, p in enumerate(prompts):
            seed = int.from_bytes(hashlib.sha256(p.encode()).digest()[:4], "little")
            out[i] = np.random.default_rng(seed).standard_normal((4, cfg.text_dim))
        return out

    def negative(b: int) -> np.ndarray:
        return np.zeros((b, 4, cfg.text_dim), np.float32)

    f, h, w = latent_fhw
    prompts = tuple(f"synthetic prompt {i}" for i in range(num_prompts))
    return World((cfg.in_dim, f, h, w), prompts, FunctionContexts(encode, negative), prompts[:4],
                 lambda *a: None)


def make_world(kind: str, cfg: DiTConfig, text_cache: str | None = None,
               latent_shape: tuple[int, ...] | None = None) -> tuple[str, World]:
    if kind not in WORLDS:
        raise ValueError(f"world must be one of {WORLDS}, got {kind!r}")
    if kind == "auto":
        kind = "toy" if is_toy(cfg) else ("cache" if text_cache else None)
        if kind is None:
            raise ValueError("the student is not a toy-world model: pass --text-cache (a "
                             "wanjax.text.cache folder) or --world synthetic")
    if kind == "toy":
        from train.world import toy_world

        return kind, toy_world()
    if kind == "cache":
        if not text_cache:
            raise ValueError("--world cache needs --text-cache")
        shape = tuple(latent_shape or (cfg.in_dim, 21, 60, 104))
        return kind, cached_world(text_cache, shape, cfg.text_len)
    fhw = tuple(latent_shape[1:]) if latent_shape else (2, 4, 4)
    return kind, synthetic_world(cfg, fhw)


@dataclasses.dataclass
class Batch:
    prompts: list[str]
    context: np.ndarray
    negative: np.ndarray
    noise: jax.Array
    key: jax.Array


def batches(world: World, prompts: Sequence[str], seed: int, batch_size: int) -> list[Batch]:
    """Fixed-size batches; the noise of prompt i depends only on (seed, i), like
    `train.toy.sample.sample_videos`, so every sampler sees the same noise per prompt."""
    noise_key, renoise_key = jax.random.split(jax.random.key(seed))
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        keys = jax.vmap(lambda i: jax.random.fold_in(noise_key, i))(
            jnp.arange(start, start + len(chunk)))
        noise = jax.vmap(lambda k: jax.random.normal(k, world.latent_shape, jnp.float32))(keys)
        out.append(Batch(chunk, world.contexts.encode(chunk), world.contexts.negative(len(chunk)),
                         noise, jax.random.fold_in(renoise_key, start)))
    return out


def read_prompts(path: str) -> list[str]:
    with open(path) as f:
        prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts
