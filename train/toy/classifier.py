"""The judge of the toy world: a small conv net trained on real renders, and its training CLI.

    python -m train.toy.classifier --out train/toy/assets/classifier --seed 0

It reads a video `[3, F, H, W]` (frames stacked as channels) and predicts its colour, shape and
direction, plus whether it looks like a *clean* render. The realness head is trained against
degraded renders: averages of several draws of the same prompt (what a one-step flow sampler
outputs: the conditional mean), partial averages down to faint ghosts (as after two steps), blur
and residual noise. Attribute heads are trained on real and degraded videos alike, so they stay
meaningful on blurry samples; "prompt accuracy" asks for all three attributes *and* realness.
Its penultimate features are the fixed embedding of the Frechet distance (train/toy/metrics.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float
from tqdm import tqdm

from configs import toy
from train.toy import world
from train.toy.data import PromptStream
from wanjax.io import checkpoint
from wanjax.io.params import flat_params, load_flat_params

SCRIPT = "python -m train.toy.classifier"
HEADS = {"colour": 4, "shape": 4, "direction": 4, "real": 2}


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    frames: int = toy.FRAMES
    height: int = toy.HEIGHT
    width: int = toy.WIDTH
    channels: tuple[int, int, int] = (32, 64, 64)
    features: int = 128


class VideoClassifier(nnx.Module):
    """conv3x3 -> conv3x3/2 -> conv3x3/2 -> dense (the features) -> one linear head per label."""

    def __init__(self, cfg: ClassifierConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        c1, c2, c3 = cfg.channels
        self.conv1 = nnx.Conv(3 * cfg.frames, c1, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), strides=2, rngs=rngs)
        self.conv3 = nnx.Conv(c2, c3, (3, 3), strides=2, rngs=rngs)
        flat = c3 * (-(-cfg.height // 4)) * (-(-cfg.width // 4))
        self.dense = nnx.Linear(flat, cfg.features, rngs=rngs)
        self.heads = nnx.Linear(cfg.features, sum(HEADS.values()), rngs=rngs)

    def features(self, video: Float[Array, "b 3 f h w"]) -> Float[Array, "b d"]:
        b, c, f, h, w = video.shape
        x = jnp.transpose(video, (0, 3, 4, 2, 1)).reshape(b, h, w, f * c)
        for conv in (self.conv1, self.conv2, self.conv3):
            x = jax.nn.gelu(conv(x))
        return jax.nn.gelu(self.dense(x.reshape(b, -1)))

    def logits(self, feats: Float[Array, "b d"]) -> dict[str, Array]:
        out = self.heads(feats)
        splits = np.cumsum(list(HEADS.values()))[:-1]
        return dict(zip(HEADS, jnp.split(out, splits, axis=-1), strict=True))

    def __call__(self, video: Float[Array, "b 3 f h w"]) -> dict[str, Array]:
        return self.logits(self.features(video))


# ----------------------------------------------------------------------------------------------
# Degraded renders: the negatives of the realness head


def gaussian_blur(video: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Blurs each frame of each video `[B, 3, F, H, W]` with its own spatial std `sigma [B]`."""
    radius = 4
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)
    kernel /= kernel.sum(axis=1, keepdims=True)  # [B, K]
    padded = np.pad(video, ((0, 0),) * 3 + ((radius, radius),) * 2, mode="edge")
    h, w = video.shape[-2:]
    rows = sum(kernel[:, i, None, None, None, None] * padded[..., i : i + h, :] for i in range(len(taps)))
    return sum(kernel[:, i, None, None, None, None] * rows[..., i : i + w] for i in range(len(taps)))


def degrade(prompts: list[str], rng: np.random.Generator) -> np.ndarray:
    """One degraded video per prompt (see the module docstring), labels still the prompt's."""
    b = len(prompts)
    real = world.render(prompts, rng)
    kind = rng.integers(0, 4, b)
    k = rng.choice([2, 3, 4, 8, 16], b)
    mean = np.zeros_like(real)
    for count in np.unique(k):  # conditional means of `count` draws per prompt
        idx = np.flatnonzero(k == count)
        sub = [prompts[i] for i in idx]
        mean[idx] = np.mean([world.render(sub, rng) for _ in range(count)], axis=0)
    # Down to faint ghosts (weight 0.15): a 2-step sampler's output is one bright copy plus
    # faint copies at the prompt's other modes, and must not pass as a clean render.
    weight = rng.uniform(0.15, 1.0, b).astype(np.float32)[:, None, None, None, None]
    blurred = gaussian_blur(real, rng.uniform(0.5, 1.6, b).astype(np.float32))
    noisy = real + rng.uniform(0.05, 0.3, (b, 1, 1, 1, 1)) * rng.standard_normal(real.shape)
    out = np.choose(
        kind[:, None, None, None, None],
        [mean, (1.0 - weight) * real + weight * mean, blurred, noisy],
    )
    return out.astype(np.float32)


def training_batch(
    prompts: list[str], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(videos [2B], attribute labels [2B, 3], real [2B])`: B clean renders, B degraded."""
    labels = world.prompt_labels(prompts)
    videos = np.concatenate([world.render(prompts, rng), degrade(prompts, rng)])
    real = np.concatenate([np.ones(len(prompts), np.int32), np.zeros(len(prompts), np.int32)])
    return videos, np.concatenate([labels, labels]), real


# ----------------------------------------------------------------------------------------------
# Training


def _loss(model: VideoClassifier, videos, labels, real) -> tuple[Array, dict]:
    logits = model(videos)
    targets = {"colour": labels[:, 0], "shape": labels[:, 1], "direction": labels[:, 2], "real": real}
    losses = {
        k: optax.softmax_cross_entropy_with_integer_labels(logits[k], targets[k]).mean()
        for k in HEADS
    }
    return sum(losses.values()), losses


def train_classifier(
    steps: int = 3000, batch_size: int = 64, seed: int = 0, progress: bool = True
) -> tuple[VideoClassifier, dict]:
    """Trains on fresh renders of the 'classifier' split; returns the model and final losses."""
    model = VideoClassifier(ClassifierConfig(), rngs=nnx.Rngs(seed))
    schedule = optax.cosine_decay_schedule(2e-3, steps, alpha=0.05)
    optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

    @nnx.jit
    def step_fn(model, optimizer, videos, labels, real):
        (_, losses), grads = nnx.value_and_grad(_loss, has_aux=True)(model, videos, labels, real)
        optimizer.update(model, grads)
        return losses

    stream = PromptStream(seed)
    tail: list[dict] = []
    bar = tqdm(range(steps), desc="classifier", disable=not progress, mininterval=2.0)
    for step in bar:
        batch = training_batch(stream.batch(step, batch_size), world.split_rng("classifier", seed, step))
        losses = step_fn(model, optimizer, *batch)
        if step % 25 == 0 or step >= steps - 50:
            losses = {k: float(v) for k, v in jax.device_get(losses).items()}
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            if step >= steps - 50:
                tail.append(losses)
    return model, {k: float(np.mean([t[k] for t in tail])) for k in HEADS}


def save_classifier(path: str | Path, model: VideoClassifier, provenance: dict) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    flat = {k: np.asarray(v) for k, v in flat_params(model).items()}
    checkpoint.save_params(path / "classifier", flat)
    config = dataclasses.asdict(model.cfg)
    meta = {
        "dtype": "float32",
        "components": {"classifier": {"family": "toy_classifier", "config": config, "params": "classifier"}},
        "provenance": provenance,
    }
    checkpoint.write_manifest(path, meta)


def load_classifier(path: str | Path = toy.CLASSIFIER_PATH) -> VideoClassifier:
    """The classifier saved by `save_classifier`."""
    path = Path(path)
    meta = checkpoint.read_manifest(path)
    entry = meta["components"].get("classifier")
    if entry is None:
        raise ValueError(f"{path} holds no toy classifier; it has {sorted(meta['components'])}")
    cfg = ClassifierConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry["config"].items()})
    model = VideoClassifier(cfg, rngs=nnx.Rngs(0))
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat_params(model).items()}
    load_flat_params(model, checkpoint.load_params(path / entry["params"], abstract))
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=SCRIPT,
        description="Train the toy-world attribute/realness classifier on fresh real renders "
        "(and degraded ones) and save it in the wanjax format.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output checkpoint folder")
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per step (x2 videos)")
    parser.add_argument("--seed", type=int, default=0, help="init and data seed")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        parser.error(f"{out} exists and is not empty; pass --overwrite to replace it")
    start = time.time()
    model, final = train_classifier(args.steps, args.batch_size, args.seed)
    wall = time.time() - start
    provenance = {
        "script": SCRIPT,
        "command": " ".join([SCRIPT, *(sys.argv[1:] if argv is None else argv)]),
        "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
        "final_loss": final, "wall_seconds": round(wall, 1), "jax": jax.__version__,
    }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_classifier(tmp, model, provenance)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print("final losses: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
    print(f"trained in {wall:.0f} s; saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
