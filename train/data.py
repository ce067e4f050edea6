"""Training data for DMD: prompts only (DMD needs no videos), with cached text embeddings.

A grain `MapDataset` turns the prompt list into step-indexed batches: shuffled per epoch, split
across processes (process p takes every P-th prompt), random access by step. Random access is
what makes resume exact: the batch of step s is a pure function of (prompts, seed, s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import grain
import jax
import jax.numpy as jnp
import numpy as np


def pad_negative(neg, ctx):
    """Pads the negative context to the prompt context's length (CFG batches them together)."""
    pad = ctx.shape[1] - neg.shape[1]
    if pad < 0:
        raise ValueError(f"negative context ({neg.shape[1]} rows) longer than prompts'")
    return jnp.pad(neg, ((0, 0), (0, pad), (0, 0)))


def epoch_indices(n: int, index: int, batch: int, seed: int) -> np.ndarray:
    """Indices of batch `index` over `n` items: epochs of a seeded permutation (a pure function
    of its arguments)."""
    pos = index * batch + np.arange(batch)
    perms = {int(e): np.random.default_rng((seed, int(e))).permutation(n) for e in set(pos // n)}
    return np.array([perms[int(p // n)][p % n] for p in pos])


class ContextSource(Protocol):
    """Turns prompts into DiT contexts `[B, L, text_dim]` (rows past each prompt's length zero)."""

    def encode(self, prompts: Sequence[str]) -> np.ndarray: ...

    def negative(self, batch: int) -> np.ndarray: ...


def prompt_batches(
    prompts: Sequence[str], global_batch: int, seed: int, num_steps: int,
    process_index: int | None = None, process_count: int | None = None,
) -> grain.MapDataset:
    """`ds[step]` -> this process's prompts for `step` (an array of `global_batch / P` strings)."""
    p = jax.process_index() if process_index is None else process_index
    n = jax.process_count() if process_count is None else process_count
    if global_batch % n:
        raise ValueError(f"global batch {global_batch} does not split over {n} processes")
    if not prompts:
        raise ValueError("no training prompts")
    epochs = math.ceil(num_steps * global_batch / len(prompts)) + 1
    ds = grain.MapDataset.source(list(prompts)).shuffle(seed=seed).repeat(epochs)
    return ds[p::n].batch(global_batch // n)


class CachedContexts:
    """Contexts from a text-embedding cache on disk (built once with the real umT5 encoder)."""

    def __init__(self, path: str, text_len: int):
        from wanjax.text.cache import TextEmbeddingCache

        self.cache = TextEmbeddingCache(path)
        self.text_len = text_len

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        ctx, _ = self.cache.get_batch(list(prompts), self.text_len)
        return np.asarray(ctx, np.float32)

    def negative(self, batch: int) -> np.ndarray:
        emb, length = self.cache.negative()
        out = np.zeros((batch, self.text_len, emb.shape[-1]), np.float32)
        out[:, :length] = np.asarray(emb[:length], np.float32)
        return out

    def prompts(self) -> list[str]:
        return list(self.cache.prompts())

    def has(self, prompt: str) -> bool:
        return prompt in self.cache


class FunctionContexts:
    """Contexts from plain functions (the toy world's fixed embedding table)."""

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray],
                 negative: Callable[[int], np.ndarray]):
        self._encode, self._negative = encode, negative

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._encode(list(prompts)), np.float32)

    def negative(self, batch: int) -> np.ndarray:
        return np.asarray(self._negative(batch), np.float32)
