"""What a DMD run trains on: latent shape, prompts, their contexts, and how to show samples."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from train.data import CachedContexts, ContextSource, FunctionContexts
from train.real_data import RealSource, latent_folder, toy_renders


@dataclasses.dataclass(frozen=True)
class World:
    latent_shape: tuple[int, ...]  # [C, F, H, W] of one sample
    prompts: tuple[str, ...]
    contexts: ContextSource
    sample_prompts: tuple[str, ...]
    # writes generated samples for humans (toy: mp4s; latent worlds: .npy latents)
    save_samples: Callable[[np.ndarray, Sequence[str], Path], None]
    # clean real latents for the GAN term with gan_real='data' (train/real_data.py); None: none
    real_samples: RealSource | None = None


def save_latents(latents: np.ndarray, prompts: Sequence[str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "latents.npy", latents)
    (out / "prompts.txt").write_text("\n".join(prompts) + "\n")


def toy_world() -> World:
    from train.toy import world as toy

    def save(videos, prompts, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        for i, (video, prompt) in enumerate(zip(videos, prompts, strict=True)):
            toy.save_mp4(str(out / f"{i:02d}_{prompt.replace(' ', '_')}.mp4"), np.asarray(video))

    prompts = tuple(toy.all_prompts())
    from configs import toy as preset

    return World(
        latent_shape=(preset.EXPERT.in_dim, preset.FRAMES, preset.HEIGHT, preset.WIDTH),
        prompts=prompts,
        contexts=FunctionContexts(lambda p: toy.encode_prompts(p)[0], toy.negative_context),
        sample_prompts=prompts[:: max(1, len(prompts) // 8)][:8],
        save_samples=save,
        real_samples=toy_renders(),
    )


def cached_world(text_cache: str, latent_shape: tuple[int, ...], text_len: int = 512,
                 prompts_file: str | None = None, real_latents: str | None = None) -> World:
    """A real world: prompts and their umT5 embeddings from a cache built offline (and, for
    the GAN term, real latents with their captions)."""
    contexts = CachedContexts(text_cache, text_len)
    cached = contexts.prompts()
    if prompts_file:
        if not Path(prompts_file).is_file():
            raise FileNotFoundError(f"prompt file {prompts_file} not found")
        prompts = tuple(p.strip() for p in Path(prompts_file).read_text().splitlines() if p.strip())
        missing = [p for p in prompts if not contexts.has(p)]
        if missing:  # found now, not as a KeyError in the middle of training
            raise ValueError(f"{len(missing)} of {len(prompts)} prompts in {prompts_file} are not "
                             f"in the text cache {text_cache} (first: {missing[0]!r}); add them "
                             "with wanjax.text.cache.build_text_cache")
    else:
        prompts = tuple(cached)
    if not prompts:
        raise ValueError(f"no prompts: the text cache {text_cache} is empty")
    real = latent_folder(real_latents, latent_shape, contexts.has) if real_latents else None
    return World(latent_shape, prompts, contexts, prompts[:4], save_latents, real)
