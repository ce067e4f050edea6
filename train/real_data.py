"""Real samples for the GAN term with `gan_real='data'` (DMD2 feeds its discriminator real data).

A source is `batch(index, size, seed) -> (clean latents [size, C, F, H, W] float32, prompts)`, a
pure function of its arguments, so a resumed run draws the straight run's batches. The toy world
renders fresh videos of random prompts; a latent world reads a folder in the layout
`train.world.save_latents` writes (`latents.npy` [N, C, F, H, W], memory-mapped, and
`prompts.txt`, one caption per line), e.g. real videos encoded once with the Wan VAE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from train.data import epoch_indices

RealSource = Callable[[int, int, int], tuple[np.ndarray, list[str]]]


def toy_renders() -> RealSource:
    """Fresh renders of uniformly drawn toy prompts (the training split's stream)."""
    from train.toy import world

    prompts = world.all_prompts()

    def batch(index: int, size: int, seed: int):
        rng = world.split_rng("train", seed, index, 1)  # (seed, step) is the teacher's stream
        chosen = [prompts[i] for i in rng.integers(0, len(prompts), size)]
        return world.render(chosen, rng).astype(np.float32), chosen

    return batch


def latent_folder(path: str, latent_shape: Sequence[int], known: Callable[[str], bool]) -> RealSource:
    """Real latents from `path/latents.npy` with captions `path/prompts.txt`; every caption must
    be `known` to the text cache (checked now, not mid-training)."""
    folder = Path(path)
    if not (folder / "latents.npy").is_file() or not (folder / "prompts.txt").is_file():
        raise FileNotFoundError(f"real latents {path} need latents.npy and prompts.txt (the layout "
                                "train.world.save_latents writes)")
    latents = np.load(folder / "latents.npy", mmap_mode="r")
    prompts = [p for p in (folder / "prompts.txt").read_text().splitlines() if p.strip()]
    if latents.ndim != 5 or tuple(latents.shape[1:]) != tuple(latent_shape):
        raise ValueError(f"{folder / 'latents.npy'} has shape {latents.shape}; the run's latents "
                         f"are [N, {', '.join(map(str, latent_shape))}]")
    if len(prompts) != len(latents):
        raise ValueError(f"{folder} holds {len(latents)} latents but {len(prompts)} captions")
    missing = [p for p in prompts if not known(p)]
    if missing:
        raise ValueError(f"{len(missing)} captions in {folder / 'prompts.txt'} are not in the text "
                         f"cache (first: {missing[0]!r}); add them with "
                         "wanjax.text.cache.build_text_cache")

    def batch(index: int, size: int, seed: int):
        idx = epoch_indices(len(latents), index, size, seed)
        return np.asarray(latents[idx], np.float32), [prompts[i] for i in idx]

    return batch
