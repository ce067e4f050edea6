"""Deterministic prompt streams for the toy world (the trainer wraps them in grain).

Epoch `e` of a stream is a permutation of all 64 prompts drawn from `(seed, e)`; the stream is
the concatenation of its epochs. Indexing is random-access, so a run resumes at any step with
exactly the prompts it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from train.toy import world


class PromptStream:
    """`stream[i]` is the i-th prompt of an endless, epoch-shuffled cycle over all prompts.

    Also a grain `RandomAccessDataSource` over one epoch's worth of indices per `len()`; use
    `batch(step, batch_size)` for step-indexed batches.
    """

    def __init__(self, seed: int = 0, prompts: list[str] | None = None):
        self.seed = int(seed)
        self.prompts = list(world.all_prompts() if prompts is None else prompts)
        if not self.prompts:
            raise ValueError("a prompt stream needs at least one prompt")

    def __len__(self) -> int:
        return len(self.prompts)

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.prompts))

    def __getitem__(self, index: int) -> str:
        index = int(index)
        if index < 0:
            raise IndexError(f"prompt stream index must be >= 0, got {index}")
        epoch, pos = divmod(index, len(self.prompts))
        return self.prompts[self._order(epoch)[pos]]

    def batch(self, step: int, batch_size: int) -> list[str]:
        """The prompts of training step `step`: indices `[step * B, (step + 1) * B)`."""
        start = int(step) * batch_size
        return [self[i] for i in range(start, start + batch_size)]

    def batches(self, batch_size: int, start_step: int = 0) -> Iterator[list[str]]:
        """Endless step-indexed batches from `start_step` on."""
        step = start_step
        while True:
            yield self.batch(step, batch_size)
            step += 1


def eval_prompts(per_prompt: int) -> list[str]:
    """Every prompt `per_prompt` times (prompt-major): a balanced evaluation set."""
    return [p for p in world.all_prompts() for _ in range(per_prompt)]
