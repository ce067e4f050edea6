"""Trains the toy dual-expert teacher with rectified flow, and loads it back.

    python -m train.toy.teacher --out train/toy/assets/teacher --seed 0

Flow matching as in Wan (dmd_notes section 1): x_sigma = (1 - sigma) x0 + sigma eps, the DiT
predicts v = eps - x0, sigma = shift(u) with u uniform. As in the A14B MoE, each expert only ever
sees its own noise range: the high expert sigma >= boundary, the low expert below, each step
training both on fresh renders of the same prompts. Prompts are dropped to the empty prompt
with probability `prompt_dropout` so that classifier-free guidance works. The checkpoint holds
the EMA weights in the project format (`wanjax.io.checkpoint`).
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
from wanjax.config import DualExpertConfig
from wanjax.io import checkpoint
from wanjax.io.params import flat_params, load_flat_params
from wanjax.models.dual_expert import DualExpertDiT
from wanjax.sampling.schedules import shift_sigma

SCRIPT = "python -m train.toy.teacher"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Teacher training hyperparameters; the defaults made the committed checkpoint."""

    steps: int = 9000
    batch_size: int = 32  # videos per step for the low expert
    high_batch_size: int = 16  # the first of them also train the high expert (an easier task)
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    shift: float = toy.TRAIN_SHIFT
    prompt_dropout: float = toy.PROMPT_DROPOUT
    seed: int = 0


def unshift_sigma(sigma: float, shift: float) -> float:
    """Inverse of `shift_sigma`: the raw u with shift(u) = sigma."""
    return sigma / (shift - (shift - 1.0) * sigma)


def expert_sigmas(key: Array, n: int, expert: str, boundary: float, shift: float) -> Array:
    """`n` noise levels sigma = shift(u) with u uniform on the expert's side of the boundary."""
    u_b = unshift_sigma(boundary, shift)
    lo, hi = (u_b, 1.0) if expert == "high" else (0.0, u_b)
    return shift_sigma(jax.random.uniform(key, (n,), minval=lo, maxval=hi), shift)


def flow_matching_loss(
    model,
    x0: Float[Array, "b c f h w"],
    context: Float[Array, "b l d"],
    sigma: Float[Array, " b"],
    noise: Float[Array, "b c f h w"],
) -> Array:
    """Mean squared error between the DiT's velocity at x_sigma and the target eps - x0."""
    s = sigma[:, None, None, None, None]
    x_sigma = (1.0 - s) * x0 + s * noise
    v = model(x_sigma, 1000.0 * sigma, context)
    return jnp.mean((v - (noise - x0)) ** 2)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, cfg.warmup_steps, max(cfg.steps, cfg.warmup_steps + 1),
        end_value=0.1 * cfg.learning_rate,
    )
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(schedule, weight_decay=cfg.weight_decay),
    )


def make_train_step(graphdefs: dict, optimizer, cfg: TrainConfig, boundary: float):
    """Jitted `(params, opt_state, ema, x0, context, negative, key, step) -> (..., losses)`.

    `params`/`ema` are `{'high': state, 'low': state}`; both experts train on the same x0.
    """

    def loss_fn(params, x0, context, key):
        losses = {}
        for i, expert in enumerate(("high", "low")):
            n = cfg.high_batch_size if expert == "high" else x0.shape[0]
            k_sigma, k_noise = jax.random.split(jax.random.fold_in(key, i))
            sigma = expert_sigmas(k_sigma, n, expert, boundary, cfg.shift)
            noise = jax.random.normal(k_noise, x0[:n].shape, jnp.float32)
            model = nnx.merge(graphdefs[expert], params[expert])
            losses[expert] = flow_matching_loss(model, x0[:n], context[:n], sigma, noise)
        return losses["high"] + losses["low"], losses

    @jax.jit
    def train_step(params, opt_state, ema, x0, context, negative, key, step):
        k_drop, k_loss = jax.random.split(key)
        drop = jax.random.uniform(k_drop, (x0.shape[0], 1, 1)) < cfg.prompt_dropout
        context = jnp.where(drop, negative, context)
        grads, losses = jax.grad(loss_fn, has_aux=True)(params, x0, context, k_loss)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        decay = jnp.minimum(cfg.ema_decay, (1.0 + step) / (10.0 + step))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
        return params, opt_state, ema, losses

    return train_step


def train_teacher(
    cfg: TrainConfig, model_cfg: DualExpertConfig = toy.TEACHER, progress: bool = True
) -> tuple[DualExpertDiT, dict]:
    """Trains a fresh teacher; returns it (EMA weights) and the mean losses of the last 100 steps."""
    model = DualExpertDiT(model_cfg, rngs=nnx.Rngs(cfg.seed))
    graphdefs, params = {}, {}
    for expert in ("high", "low"):
        graphdefs[expert], params[expert] = nnx.split(model.expert(expert))
    optimizer = make_optimizer(cfg)
    opt_state = optimizer.init(params)
    ema = jax.tree.map(jnp.copy, params)
    step_fn = make_train_step(graphdefs, optimizer, cfg, model_cfg.boundary)
    text_dim = model_cfg.high.text_dim
    negative = jnp.asarray(world.negative_context(cfg.batch_size, text_dim))
    stream = PromptStream(cfg.seed)
    key = jax.random.key(cfg.seed)
    tail: list[dict] = []  # the last 100 steps' losses
    bar = tqdm(range(cfg.steps), desc="teacher", disable=not progress, mininterval=2.0)
    for step in bar:
        prompts = stream.batch(step, cfg.batch_size)
        x0 = world.render(prompts, world.split_rng("train", cfg.seed, step))
        context = world.encode_prompts(prompts, text_dim)[0]
        params, opt_state, ema, losses = step_fn(
            params, opt_state, ema, x0, context, negative, jax.random.fold_in(key, step), step
        )
        if step % 25 == 0 or step >= cfg.steps - 100:
            losses = {k: float(v) for k, v in jax.device_get(losses).items()}
            bar.set_postfix(high=f"{losses['high']:.4f}", low=f"{losses['low']:.4f}", refresh=False)
            if step >= cfg.steps - 100:
                tail.append(losses)
    final = {k: float(np.mean([t[k] for t in tail])) for k in ("high", "low")}
    for expert in ("high", "low"):
        nnx.update(model.expert(expert), ema[expert])
    return model, final


# ----------------------------------------------------------------------------------------------
# Checkpoint


def save_teacher(path: str | Path, model: DualExpertDiT, provenance: dict) -> None:
    """Writes `path/{dit_high,dit_low}` and `path/wanjax.json` (the project format)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    components = {}
    for expert in ("high", "low"):
        name = f"dit_{expert}"
        flat = {k: np.asarray(v) for k, v in flat_params(model.expert(expert)).items()}
        checkpoint.save_params(path / name, flat)
        components[name] = {
            "family": "dit",
            "config": checkpoint.dit_config_to_json(model.cfg.high if expert == "high" else model.cfg.low),
            "params": name,
        }
    meta = {
        "dtype": "float32",
        "components": components,
        "boundary": model.cfg.boundary,
        "provenance": provenance,
    }
    checkpoint.write_manifest(path, meta)


def load_teacher(path: str | Path = toy.TEACHER_PATH) -> DualExpertDiT:
    """The toy teacher saved by `save_teacher` (float32)."""
    path = Path(path)
    meta = checkpoint.read_manifest(path)
    comps = meta["components"]
    missing = {"dit_high", "dit_low"} - set(comps)
    if missing:
        raise ValueError(f"{path} is not a dual-expert checkpoint: missing {sorted(missing)}")
    cfg = DualExpertConfig(
        high=checkpoint.dit_config_from_json(comps["dit_high"]["config"]),
        low=checkpoint.dit_config_from_json(comps["dit_low"]["config"]),
        boundary=float(meta.get("boundary", toy.BOUNDARY)),
    )
    model = DualExpertDiT(cfg, rngs=nnx.Rngs(0))
    for expert in ("high", "low"):
        module = model.expert(expert)
        abstract = {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat_params(module).items()
        }
        name = f"dit_{expert}"
        load_flat_params(module, checkpoint.load_params(path / comps[name]["params"], abstract))
    return model


# ----------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog=SCRIPT,
        description="Train the toy dual-expert Wan teacher (configs/toy.py) with rectified flow "
        "on freshly rendered toy videos, and save its EMA weights in the wanjax format.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output checkpoint folder")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps")
    p.add_argument("--seed", type=int, default=d.seed, help="init, data and noise seed")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="videos per step (the low-noise expert's batch)")
    p.add_argument("--high-batch-size", type=int, default=d.high_batch_size,
                   help="how many of them also train the high-noise expert")
    p.add_argument("--lr", type=float, default=d.learning_rate, help="peak AdamW learning rate")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "high_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.lr > 0:
        parser.error("--lr must be > 0")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        parser.error(f"{out} exists and is not empty; pass --overwrite to replace it")
    if args.high_batch_size > args.batch_size:
        parser.error("--high-batch-size must be <= --batch-size")
    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, high_batch_size=args.high_batch_size,
        learning_rate=args.lr, seed=args.seed,
    )
    start = time.time()
    model, final = train_teacher(cfg)
    wall = time.time() - start
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    provenance = {
        "script": SCRIPT,
        "command": " ".join([SCRIPT, *(sys.argv[1:] if argv is None else argv)]),
        "train_config": dataclasses.asdict(cfg),
        "final_loss": final,
        "wall_seconds": round(wall, 1),
        "jax": jax.__version__,
    }
    save_teacher(tmp, model, provenance)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"final loss (mean of last 100 steps): high {final['high']:.4f}, low {final['low']:.4f}")
    print(f"trained in {wall:.0f} s; saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
