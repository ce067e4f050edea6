"""Sample-quality metrics of the toy world, built so that they can fail.

- Prompt accuracy: the committed classifier (train/toy/classifier.py) must read the prompt's
  colour, shape and direction off a sample *and* judge it a clean render. A one-step flow sample
  (the conditional mean: a blurred blob) fails the last test even where its colour is right.
- Frechet distance (FD) between the classifier's penultimate features of the samples and of
  held-out real renders of the same prompts, like FID. Sliced Wasserstein (SWD) on raw pixels
  with fixed random directions is a second, learning-free distance.
- Modes: every prompt is a mixture of `world.NUM_MODES` clean templates (lane, offset, size).
  A sample is *on-mode* when it lies within `ON_MODE_RMS` of a template of its prompt; the
  histogram of nearest modes, pooled over prompts, gives the mode total variation from uniform
  (`mode_tv`, as the 2-D toy of dmd_notes section 6).
- Diversity: mean pairwise RMS distance between samples of the same prompt, next to the same
  figure for real renders (a mode-collapsed sampler scores low; a blurry one too).

`evaluate_samples(videos, prompts)` returns all of them; `real_floor(prompts)` is the same row
for a second real draw, the best any sampler can expect at that sample count.

Raw or clipped: samplers overshoot [-1, 1] (CFG extrapolates); the judge was trained on unclipped
inputs, while a viewer gets `displayed(videos)` (the toy pipeline and the PNG/MP4 writers clip).
Real renders are inside the range, so clipping only changes samples. Reports score both.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Float

from configs import toy
from train.toy import world
from train.toy.classifier import VideoClassifier, load_classifier

ATTRIBUTE_KEYS = ("colour", "shape", "direction")
HELDOUT_SEED = 0
SWD_PROJECTIONS = 256
SWD_SEED = 0
# RMS distance to the nearest clean template: real renders (jitter only) stay below 0.05; the
# closest two modes of a prompt (the two sizes in one lane) are 0.05 to 0.12 apart.
ON_MODE_RMS = 0.07


@functools.cache
def default_classifier() -> VideoClassifier:
    """The committed classifier, loaded once per process."""
    return load_classifier(toy.CLASSIFIER_PATH)


def classify(
    classifier: VideoClassifier, videos: Float[np.ndarray, "b 3 f h w"], batch_size: int = 512
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`({head: argmax [B]}, features [B, D])`, in fixed-size batches (one compile)."""
    videos = np.asarray(videos, np.float32)
    graphdef, state = nnx.split(classifier)
    preds: dict[str, list] = {}
    feats = []
    for start in range(0, len(videos), batch_size):
        chunk = videos[start : start + batch_size]
        n = len(chunk)
        chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), np.float32)])
        p, f = jax.device_get(_classify_jit(graphdef, state, chunk))
        for k, v in p.items():
            preds.setdefault(k, []).append(v[:n])
        feats.append(f[:n])
    return {k: np.concatenate(v) for k, v in preds.items()}, np.concatenate(feats)


@functools.partial(jax.jit, static_argnums=0)
def _classify_jit(graphdef, state, videos):
    model = nnx.merge(graphdef, state)
    feats = model.features(videos)
    return {k: jnp.argmax(v, axis=-1) for k, v in model.logits(feats).items()}, feats


def frechet_distance(a: Float[np.ndarray, "n d"], b: Float[np.ndarray, "m d"]) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def sliced_wasserstein(
    a: Float[np.ndarray, "n ..."],
    b: Float[np.ndarray, "m ..."],
    num_projections: int = SWD_PROJECTIONS,
    seed: int = SWD_SEED,
) -> float:
    """sqrt(mean over fixed random unit directions of W2^2 of the 1-D projections)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    dirs = np.random.default_rng(seed).standard_normal((a.shape[1], num_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    q = (np.arange(max(len(a), len(b))) + 0.5) / max(len(a), len(b))
    qa = np.quantile(pa, q, axis=0, method="inverted_cdf")
    qb = np.quantile(pb, q, axis=0, method="inverted_cdf")
    return float(np.sqrt(np.mean((qa - qb) ** 2)))


def diversity(videos: Float[np.ndarray, "b 3 f h w"], prompts: Sequence[str]) -> float:
    """Mean over prompts of the mean pairwise RMS distance between that prompt's samples."""
    videos = np.asarray(videos, np.float64).reshape(len(videos), -1)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    per_prompt = []
    for idx in groups.values():
        if len(idx) < 2:
            continue
        x = videos[idx]
        sq = (x * x).sum(1)
        d2 = np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None) / x.shape[1]
        iu = np.triu_indices(len(idx), 1)
        per_prompt.append(np.sqrt(d2[iu]).mean())
    if not per_prompt:
        raise ValueError("diversity needs at least two samples of some prompt")
    return float(np.mean(per_prompt))


@functools.cache
def mode_templates() -> np.ndarray:
    """`[64, NUM_MODES, 3*F*H*W]`: every prompt's clean mode templates (no jitter)."""
    labels = world.prompt_labels(world.all_prompts())
    modes = np.arange(world.NUM_MODES)
    flat = world.render_modes(np.repeat(labels, len(modes), 0), np.tile(modes, len(labels)))
    return flat.reshape(len(labels), len(modes), -1)


def assign_modes(
    videos: Float[np.ndarray, "b 3 f h w"], prompts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """`(nearest mode [B], its RMS distance [B])` among the templates of each sample's prompt."""
    templates = mode_templates()
    index = {p: i for i, p in enumerate(world.all_prompts())}
    rows = np.array([index[p] for p in prompts])
    x = np.asarray(videos, np.float32).reshape(len(videos), 1, -1)
    dist = np.sqrt(((x - templates[rows]) ** 2).mean(-1))  # [B, NUM_MODES]
    return dist.argmin(1), dist.min(1)


def mode_tv(modes: np.ndarray, num_modes: int = world.NUM_MODES) -> float:
    """Total variation between the histogram of `modes` and the uniform distribution."""
    hist = np.bincount(modes, minlength=num_modes) / len(modes)
    return float(0.5 * np.abs(hist - 1.0 / num_modes).sum())


SCORINGS = ("raw", "clipped")


def displayed(videos: Float[np.ndarray, "b 3 f h w"]) -> Float[np.ndarray, "b 3 f h w"]:
    """What a viewer gets from a sample: values clipped to the renderable range [-1, 1]."""
    return np.clip(np.asarray(videos, np.float32), -1.0, 1.0)


def scored_as(scoring: str, videos: Float[np.ndarray, "b 3 f h w"]) -> np.ndarray:
    """`videos` as the named entry of `SCORINGS` scores them."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    return displayed(videos) if scoring == "clipped" else np.asarray(videos, np.float32)


def real_videos(prompts: Sequence[str], split: str = "heldout", seed: int = HELDOUT_SEED) -> np.ndarray:
    """Real renders of `prompts` from a named split (the reference of every distance)."""
    return world.render(list(prompts), world.split_rng(split, seed))


def evaluate_samples(
    videos: Float[np.ndarray, "b 3 f h w"],
    prompts: Sequence[str],
    *,
    reference: np.ndarray | None = None,
    classifier: VideoClassifier | None = None,
) -> dict[str, float]:
    """Every metric of one sample set; `reference` defaults to held-out real renders of `prompts`.

    Keys: `colour_acc`, `shape_acc`, `direction_acc`, `attr_acc` (all three), `real_rate`,
    `prompt_acc` (all three and judged clean), `on_mode`, `mode_tv`, `fd`, `swd`, `diversity`,
    `diversity_real`.
    """
    videos = np.asarray(videos, np.float32)
    if videos.ndim != 5 or videos.shape[0] != len(prompts):
        raise ValueError(f"expected videos [{len(prompts)}, 3, F, H, W], got {videos.shape}")
    classifier = default_classifier() if classifier is None else classifier
    reference = real_videos(prompts) if reference is None else np.asarray(reference, np.float32)
    labels = world.prompt_labels(prompts)
    preds, feats = classify(classifier, videos)
    _, ref_feats = classify(classifier, reference)
    hits = np.stack([preds[k] == labels[:, i] for i, k in enumerate(ATTRIBUTE_KEYS)], axis=1)
    real = preds["real"] == 1
    out = {f"{k}_acc": float(hits[:, i].mean()) for i, k in enumerate(ATTRIBUTE_KEYS)}
    out["attr_acc"] = float(hits.all(1).mean())
    out["real_rate"] = float(real.mean())
    out["prompt_acc"] = float((hits.all(1) & real).mean())
    modes, dist = assign_modes(videos, prompts)
    out["on_mode"] = float((dist < ON_MODE_RMS).mean())
    out["mode_tv"] = mode_tv(modes)
    out["fd"] = frechet_distance(feats, ref_feats)
    out["swd"] = sliced_wasserstein(videos, reference)
    out["diversity"] = diversity(videos, prompts)
    out["diversity_real"] = diversity(reference, prompts)
    return out


def real_floor(prompts: Sequence[str], **kw) -> dict[str, float]:
    """`evaluate_samples` of a second, independent real draw: the floor of every distance."""
    return evaluate_samples(real_videos(prompts, split="reference"), prompts, **kw)


TABLE_COLUMNS = (
    "prompt_acc", "attr_acc", "real_rate", "on_mode", "mode_tv", "fd", "swd", "diversity",
)


def format_table(rows: dict[str, dict[str, float]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A Markdown table, one row per sampler."""
    name_w = max(len("sampler"), *(len(n) for n in rows))
    head = f"| {'sampler':<{name_w}} | " + " | ".join(f"{c:>10}" for c in columns) + " |"
    rule = f"|{'-' * (name_w + 2)}|" + "|".join("-" * 12 for _ in columns) + "|"
    body = [
        f"| {name:<{name_w}} | " + " | ".join(f"{row[c]:>10.4f}" for c in columns) + " |"
        for name, row in rows.items()
    ]
    return "\n".join([head, rule, *body])
