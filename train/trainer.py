"""The DMD training loop for one stage: data, TTUR updates, logging, checkpoints, export."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from train import dmd_math, gan, ode_pairs
from train.checkpointing import Checkpoints, StopFlag
from train.data import pad_negative, prompt_batches
from train.dmd_config import DMDConfig
from train.dmd_losses import StageSetup
from train.dmd_step import TrainState, init_state, make_steps
from train.stages import make_stage
from train.world import World
from wanjax.io import checkpoint
from wanjax.io.params import flat_params
from wanjax.sampling.loop import dit_apply, dit_apply_features, make_sampler


class NonFiniteError(RuntimeError):
    """Raised when a loss or gradient norm stops being finite."""


@dataclasses.dataclass
class RunOptions:
    out: Path
    log_every: int = 10
    ckpt_every: int = 200
    sample_every: int = 0  # generator updates; 0: only at the end of a stage
    keep: int = 3
    resume: bool = True
    quiet: bool = False
    tensorboard: bool = False  # also write every log row to OUT/tensorboard (tag stage/metric)
    teacher: str = ""  # the teacher's path, recorded with the cached ODE pairs
    on_iteration: Callable[[int], None] | None = None  # test hook, called after each iteration


@dataclasses.dataclass
class Networks:
    """Split NNX graphdefs and parameter states of the teacher's two experts."""

    graphdef_train: nnx.GraphDef  # student / critic architecture (remat, compute dtype)
    graphdef_real: nnx.GraphDef  # frozen teacher
    teacher: dict  # {'high': state, 'low': state}
    configs: dict  # {'high': DiTConfig, 'low': DiTConfig}
    boundary: float


@functools.lru_cache(maxsize=8)
def compiled_steps(cfg: DMDConfig, stage: str, graphdef_train, graphdef_real, latent_shape):
    """The jitted updates of a stage, shared by every run of the same settings in a process
    (a resumed or repeated run then reuses the compilation)."""
    return make_steps(cfg, stage_setup(cfg, stage), dit_apply(graphdef_train),
                      dit_apply(graphdef_real), latent_shape,
                      dit_apply_features(graphdef_train) if cfg.gan_in_stage(stage) else None)


def stage_setup(cfg: DMDConfig, name: str) -> StageSetup:
    on = cfg.gan_in_stage(name)
    return StageSetup(make_stage(cfg, name), cfg.sigmas, cfg.sample_config().renoise_targets(),
                      cfg.num_high_steps, cfg.loss_shift, cfg.boundary, cfg.guidance_high,
                      cfg.guidance_low, cfg.regression_weight, cfg.gan_weight if on else 0.0,
                      cfg.gan_critic_weight if on else 0.0, cfg.gan_noise_shift,
                      cfg.gan_reversed_weight if on else 0.0)


def _stage_params(cfg: DMDConfig, name: str, nets: Networks, student: dict):
    """(gen init, critic init, real, frozen generator) for a stage.

    Scores at a noise level come from the expert that owns it: where a stage's noise range
    crosses the boundary, the real score is both teacher experts, routed per sample (phased
    stage 1 draws sigma from (sigma_b, 1), and sigma_b < boundary). The critic is the stage's
    own (Phased DMD trains the fake score of a phase on that phase's interval), except for a
    stage that covers the whole range (every student step in one expert, or a high stage with
    handover 'x0_*'): it is then routed too.
    """
    t = nets.teacher
    if name == "joint":
        return t, t, t, None
    stage = make_stage(cfg, name)
    routed = stage.crosses(cfg.boundary, cfg.loss_shift)
    real = t if routed else t[name]
    whole = stage.tau == 0.0 and (stage.raw_lo, stage.raw_hi) == (cfg.t_min, cfg.t_max)
    critic = t if routed and whole else t[name]
    return t[name], critic, real, student.get("high") if name == "low" else None


class StageRunner:
    def __init__(self, cfg: DMDConfig, world: World, nets: Networks, opts: RunOptions,
                 stop: StopFlag):
        self.cfg, self.world, self.nets, self.opts, self.stop = cfg, world, nets, opts, stop
        self.log_path = opts.out / "metrics.jsonl"
        self._tb = None  # tensorboardX.SummaryWriter, opened at the first log row

    def _tensorboard(self, name: str, it: int, row: dict) -> None:
        if not self.opts.tensorboard or jax.process_index() != 0:
            return
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.opts.out / "tensorboard"))
        for k, v in row.items():
            if k not in ("stage", "iteration"):
                self._tb.add_scalar(f"{name}/{k}", v, global_step=it)
        self._tb.flush()

    def _close_tensorboard(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def run(self, name: str, student: dict) -> dict:
        """Trains stage `name`; returns the student's expert params (EMA) after it."""
        cfg, nets, opts = self.cfg, self.nets, self.opts
        gen0, critic0, real, frozen_gen = _stage_params(cfg, name, nets, student)
        gen_step, critic_step = compiled_steps(cfg, name, nets.graphdef_train,
                                               nets.graphdef_real, tuple(self.world.latent_shape))
        ckpts = Checkpoints(opts.out / name / "checkpoints", keep=opts.keep)
        key = jax.random.PRNGKey(cfg.seed + _stage_index(name))
        disc = None
        if cfg.gan_in_stage(name):
            disc = gan.init_head(jax.random.fold_in(key, 7), nets.configs["high"].dim, cfg.gan_hidden)
        state = init_state(cfg, gen0, critic0, key, disc)
        if opts.resume and ckpts.latest_step() is not None:
            state = ckpts.restore(state)
            self._say(f"[{name}] resumed at iteration {int(state.step)} from {ckpts.directory}")
        iterations = cfg.iterations_of(name)
        data = prompt_batches(self.world.prompts, cfg.batch_size, cfg.seed, iterations)
        frozen = (real, frozen_gen)
        neg = jnp.asarray(self.world.contexts.negative(cfg.batch_size))
        pairs = self.ode_pairs() if cfg.uses_ode_pairs else None
        setup = stage_setup(cfg, name)
        endpoint, tau = setup.endpoint_index, setup.stage.tau
        start = int(state.step)
        bar = tqdm(range(start, iterations), initial=start, total=iterations,
                   desc=f"dmd {name}", disable=opts.quiet, unit="it")
        last_saved = start
        metrics: dict = {}
        t0, n0 = time.perf_counter(), start
        for it in bar:
            ctx = jnp.asarray(self.world.contexts.encode(list(data[it])))
            batch = (ctx, pad_negative(neg, ctx))
            if it % cfg.critic_ratio == 0:
                reg = None  # fetched only for the term that reads it
                if cfg.regression_weight > 0:
                    reg = self._pair_batch(pairs, it // cfg.critic_ratio)
                state, m = gen_step(state, frozen, batch, reg)
                metrics.update(m)
                if opts.sample_every and int(state.gen_updates) % opts.sample_every == 0:
                    self.write_samples(name, state, student, int(state.gen_updates))
            real = self._gan_real_batch(pairs, it, endpoint, tau) if disc is not None else None
            state, m = critic_step(state, frozen, batch, real)
            metrics.update(m)
            if it % opts.log_every == 0 or it == iterations - 1:
                row = self._log(name, it, metrics, (it + 1 - n0) / (time.perf_counter() - t0))
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("gen_loss", "critic_loss") if k in row})
            if opts.on_iteration is not None:
                opts.on_iteration(it)
            if (it + 1) % opts.ckpt_every == 0 or self.stop:
                ckpts.save(it + 1, state)
                last_saved = it + 1
            if self.stop:
                ckpts.close()
                self._close_tensorboard()
                raise KeyboardInterrupt(f"stopped by signal {self.stop.signal} after iteration "
                                        f"{it + 1}; checkpoint saved, rerun to resume")
        if last_saved != iterations and int(state.step) == iterations:
            ckpts.save(iterations, state, force=True)
        ckpts.close()
        self._close_tensorboard()  # one events file per stage, complete when the stage ends
        experts = _params_by_expert(name, state.ema)
        self.write_samples(name, state, {**student, **experts}, int(state.gen_updates), final=True)
        return experts

    def ode_pairs(self) -> dict:
        """The teacher ODE pairs of the regression term: made once per run, cached in OUT."""
        cfg, nets, world = self.cfg, self.nets, self.world
        settings = ode_pairs.PairSettings(
            cfg.regression_pairs, cfg.regression_ode_steps, cfg.regression_ode_shift, cfg.seed,
            tuple(float(s) for s in cfg.sigmas), cfg.guidance_high, cfg.guidance_low,
            cfg.boundary, self.opts.teacher)

        def make():
            self._say(f"making {cfg.regression_pairs} teacher ODE pairs "
                      f"({cfg.regression_ode_steps} Euler steps with CFG)")
            return ode_pairs.make_pairs(
                dit_apply(nets.graphdef_real), nets.teacher, world.prompts, world.contexts.encode,
                world.contexts.negative, tuple(world.latent_shape), settings,
                batch=min(64, cfg.regression_pairs), progress=not self.opts.quiet)

        return ode_pairs.load_or_make(self.opts.out / ode_pairs.PAIRS_FILE, settings, make)

    def _pair_batch(self, pairs: dict, index: int, stream: int = 0, at: int | None = None):
        """Pairs for generator update `index` (stream 0: regression, all grid states) or critic
        iteration `index` (stream 1: the GAN term's real samples, only the states at grid
        index `at`)."""
        idx = ode_pairs.pair_batch(pairs, index, self.cfg.batch_size, self.cfg.seed + 7919 * stream)
        prompts = [self.world.prompts[i] for i in pairs["prompt"][idx]]
        x = pairs["x"][idx] if at is None else pairs["x"][idx, at]
        return jnp.asarray(x), jnp.asarray(self.world.contexts.encode(prompts))

    def _gan_real_batch(self, pairs: dict | None, it: int, endpoint: int, tau: float):
        """The GAN critic's real samples for critic iteration `it`, at the stage's endpoint
        noise level `tau`: teacher ODE states there (their own stream of pairs; only those states
        go to devices), or real latents brought to tau with fresh noise on the bridge."""
        cfg = self.cfg
        if cfg.gan_real == "teacher":
            return self._pair_batch(pairs, it, stream=1, at=endpoint)
        x0, prompts = self.world.real_samples(it, cfg.batch_size, cfg.seed)
        x = jnp.asarray(x0)
        if tau > 0.0:
            eps = np.random.default_rng((cfg.seed, 2, it)).standard_normal(x0.shape, np.float32)
            x = dmd_math.noise_to(x, 0.0, jnp.full((len(x0),), tau, jnp.float32), jnp.asarray(eps))
        return x, jnp.asarray(self.world.contexts.encode(prompts))

    def _log(self, name: str, it: int, metrics: dict, its_per_s: float) -> dict:
        row = {"stage": name, "iteration": it}
        for k, v in metrics.items():
            value = float(v)
            if not math.isfinite(value):
                raise NonFiniteError(
                    f"[{name}] {k} became {value} at iteration {it}; stopping without saving. "
                    f"The last good checkpoint is in {self.opts.out / name / 'checkpoints'}"
                )
            row[k] = value
        row["iterations_per_s"] = its_per_s
        row["step_time_s"] = 1.0 / its_per_s if its_per_s > 0 else 0.0
        row["samples_per_s"] = its_per_s * self.cfg.batch_size
        row["tokens_per_s"] = row["samples_per_s"] * self._tokens_per_sample()
        with self.log_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._tensorboard(name, it, row)
        return row

    def _tokens_per_sample(self) -> int:
        """DiT tokens of one latent: (F / pt) (H / ph) (W / pw)."""
        _, f, h, w = self.world.latent_shape
        pt, ph, pw = self.nets.configs["high"].patch_size
        return (f // pt) * (h // ph) * (w // pw)

    def write_samples(self, name: str, state: TrainState, student: dict, gen_updates: int,
                      final: bool = False) -> None:
        """Samples the student (current EMA) on fixed prompts and seeds."""
        if jax.process_index() != 0:
            return
        experts = {**self.nets.teacher, **student, **_params_by_expert(name, state.ema)}
        prompts = list(self.world.sample_prompts)
        ctx = jnp.asarray(self.world.contexts.encode(prompts))
        noise = jax.random.normal(jax.random.PRNGKey(1234), (len(prompts), *self.world.latent_shape))
        apply = dit_apply(self.nets.graphdef_train)
        sample = make_sampler(apply, apply, self.cfg.sample_config())
        x = sample(experts["high"], experts["low"], noise, ctx, None, jax.random.PRNGKey(4321))
        tag = "final" if final else f"gen{gen_updates:06d}"
        self.world.save_samples(np.asarray(x), prompts, self.opts.out / name / "samples" / tag)

    def _say(self, msg: str) -> None:
        if not self.opts.quiet:
            tqdm.write(msg)


def _stage_index(name: str) -> int:
    return {"high": 0, "low": 1, "joint": 2}[name]


def _params_by_expert(name: str, params) -> dict:
    """A stage's generator params keyed by expert (a joint stage's are already)."""
    if name == "joint":
        return dict(params)
    return {name: params}


def export_student(out: Path, cfg: DMDConfig, nets: Networks, student: dict, meta: dict) -> Path:
    """Writes the student as a wanjax checkpoint that sampling loads unchanged."""
    path = out / "student"
    tmp = out / ".student.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    components = {}
    for expert in ("high", "low"):
        params = student.get(expert, nets.teacher[expert])
        module = nnx.merge(nets.graphdef_train, params)
        checkpoint.save_params(tmp / f"dit_{expert}", flat_params(module))
        components[f"dit_{expert}"] = {
            "config": checkpoint.dit_config_to_json(nets.configs[expert]),
            "params": f"dit_{expert}",
            "trained": expert in student,
        }
    sample_cfg = dataclasses.asdict(cfg.sample_config())
    checkpoint.write_manifest(tmp, {
        "dtype": "float32", "components": components, "boundary": nets.boundary,
        "student": {"sample_config": sample_cfg, "dmd_config": dataclasses.asdict(cfg), **meta},
    })
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path
