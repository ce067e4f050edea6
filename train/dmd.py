"""`python -m train.dmd`: DMD2 few-step distillation of the dual-expert Wan model.

With no arguments it distils the built-in toy-world teacher (train/toy) into a 4-step phased
student on the CPU in a few minutes and writes OUT/student (a checkpoint `wanjax.sample` and
`train.calibrate` load), OUT/metrics.jsonl and sample videos. `--preset a14b` runs the same
algorithm on Wan2.2-T2V-A14B from a converted checkpoint and a text-embedding cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from train.checkpointing import StopFlag
from train.dmd_config import HANDOVERS, MOE_MODES, DMDConfig
from train.trainer import Networks, NonFiniteError, RunOptions, StageRunner, export_student
from train.world import World, cached_world, toy_world
from wanjax.argtypes import (
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_float_list,
    positive_int,
    positive_int_list,
)
from wanjax.config import Precision
from wanjax.io import checkpoint
from wanjax.loading import load_dit_module
from wanjax.models.dit import WanDiT
from wanjax.parallel import distributed
from wanjax.parallel.mesh import make_mesh, parse_mesh

PRESETS = ("toy", "a14b")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.dmd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = "(default: %(default)s)"
    p.add_argument("--preset", choices=PRESETS, default="toy", help=f"configs/dmd_<preset>.py {d}")
    p.add_argument("--teacher", help="converted teacher checkpoint (default: the preset's)")
    p.add_argument("--out", default="outputs/dmd", help=f"output folder {d}")
    p.add_argument("--iterations", type=positive_int_list,
                   help="critic iterations of every stage, or one count per stage in training "
                   "order, e.g. 3000,5000 for a phased high then low stage (preset's); more "
                   "than a finished run's in --out extends it (a longer stage retrains the "
                   "stages after it)")
    p.add_argument("--batch-size", type=positive_int, help="global batch (preset's)")
    p.add_argument("--student-steps", help="raw student timesteps, e.g. 1000,750,500,250 (preset's)")
    p.add_argument("--moe-mode", choices=MOE_MODES, help="dual-expert handling (phased)")
    p.add_argument("--handover", choices=HANDOVERS,
                   help="phased: the high stage is scored on its endpoint on the bridge at the "
                   "first low step's noise level, above it (bridge), or on its x0 prediction "
                   "over the whole range by both experts (x0_*; its stage then also holds both "
                   "critic experts), handing the low step the bridge latent (x0_bridge) or the "
                   "x0 renoised with fresh noise (x0_renoise) (preset's: bridge)")
    p.add_argument("--lr-gen", type=float, help="generator learning rate (preset's)")
    p.add_argument("--lr-critic", type=float, help="critic learning rate (preset's)")
    p.add_argument("--guidance", type=positive_float_list,
                   help="the real score's CFG scale (standard convention), one for both experts "
                   "or HIGH,LOW; the public Wan recipes distil with 4-6, above the teacher's own "
                   "sampling scale (preset's)")
    p.add_argument("--critic-ratio", type=positive_int, help="critic steps per generator step (5)")
    p.add_argument("--grad-accum", type=positive_int,
                   help="micro-batches accumulated per optimizer update (preset's; 1)")
    p.add_argument("--regression-weight", type=nonnegative_float,
                   help="weight of the regression loss on teacher ODE pairs; 0 turns it off "
                   "(preset's; 0)")
    p.add_argument("--regression-pairs", type=positive_int,
                   help="teacher ODE pairs made once per run for the regression and GAN terms "
                   "(preset's: toy 1024, a14b 64)")
    p.add_argument("--gan-weight", type=nonnegative_float,
                   help="weight of DMD2's GAN term (a head on the critic tells the student's "
                   "samples from the teacher's ODE samples); 0 turns it off (preset's; 0)")
    p.add_argument("--gan-real", choices=("teacher", "data"),
                   help="the GAN term's real samples: the teacher's ODE endpoints (no data "
                   "needed) or real data (DMD2's choice; the toy world renders it, a14b reads "
                   "--real-latents) (preset's; teacher)")
    p.add_argument("--real-latents",
                   help="a14b with --gan-real data: folder of real video latents (latents.npy "
                   "[N,C,F,H,W] from the Wan VAE + prompts.txt, one caption per line)")
    p.add_argument("--noise-shift", type=positive_float,
                   help="shift of the DMD and critic noise-level draws, sigma = shift(u); "
                   "smaller spends more of the losses at low noise (default: the student's shift)")
    p.add_argument("--gan-noise-shift", type=positive_float,
                   help="with --gan-weight: the GAN term draws its own noise levels with this "
                   "shift (e.g. 1: realness judged at low noise, where faint defects show) while "
                   "the DMD term keeps its own; costs a second critic pass (default: the GAN "
                   "shares the DMD term's levels)")
    p.add_argument("--gan-stages",
                   help="with --gan-weight: comma list of the stages that run the GAN term, e.g. "
                   "low (skips it in the phased high stage, where the head stays at chance) "
                   "(default: all)")
    p.add_argument("--gan-reversed-weight", type=nonnegative_float,
                   help="with --gan-weight: the discriminator also learns that real samples "
                   "played backwards are fake, with this weight, so it must read the motion "
                   "against the prompt; adds B samples to the critic's 2B GAN batch (default 0: "
                   "off)")
    p.add_argument("--seed", type=int, help="run seed (preset's)")
    p.add_argument("--text-cache", help="text-embedding cache (wanjax.text.cache); a14b only")
    p.add_argument("--prompts", help="prompt file, one per line (default: all cached prompts)")
    p.add_argument("--latent-shape", default=None,
                   help="C,F,H,W of the latents for a14b (default 16,21,60,104 = 480p, 81 frames)")
    p.add_argument("--mesh", default="", help="device mesh, e.g. fsdp=8 or fsdp=4,sequence=2")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --out")
    p.add_argument("--log-every", type=positive_int, default=10, help=f"iterations per log row {d}")
    p.add_argument("--ckpt-every", type=positive_int, default=200, help=f"iterations per checkpoint {d}")
    p.add_argument("--sample-every", type=nonnegative_int, default=0,
                   help=f"generator updates per sample set; 0: end of each stage only {d}")
    p.add_argument("--keep", type=positive_int, default=3, help=f"checkpoints kept per stage {d}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log the metrics rows to OUT/tensorboard (tags STAGE/METRIC)")
    distributed.add_distributed_args(p)
    return p


def _one_or_per_stage(counts: tuple[int, ...] | None) -> int | tuple[int, ...] | None:
    return counts if counts is None or len(counts) > 1 else counts[0]


def _override(cfg: DMDConfig, args) -> DMDConfig:
    changes = {k: v for k, v in {
        "iterations": _one_or_per_stage(args.iterations), "batch_size": args.batch_size,
        "moe_mode": args.moe_mode, "handover": args.handover,
        "lr_gen": args.lr_gen, "lr_critic": args.lr_critic, "critic_ratio": args.critic_ratio,
        "grad_accum": args.grad_accum, "regression_weight": args.regression_weight,
        "regression_pairs": args.regression_pairs, "gan_weight": args.gan_weight,
        "noise_shift": args.noise_shift, "gan_real": args.gan_real, "seed": args.seed,
        "gan_noise_shift": args.gan_noise_shift, "gan_reversed_weight": args.gan_reversed_weight,
    }.items() if v is not None}
    if args.guidance:
        if len(args.guidance) > 2:
            raise ValueError(f"--guidance takes one scale or HIGH,LOW, got {len(args.guidance)}")
        high, low = args.guidance if len(args.guidance) == 2 else args.guidance * 2
        changes["guidance_high"], changes["guidance_low"] = high, low
    if args.gan_stages:
        changes["gan_stages"] = tuple(s.strip() for s in args.gan_stages.split(","))
    if args.student_steps:
        try:
            changes["raw_timesteps"] = tuple(float(t) for t in args.student_steps.split(","))
        except ValueError:
            raise ValueError(f"--student-steps must be numbers, got {args.student_steps!r}") from None
    cfg = dataclasses.replace(cfg, **changes)
    # options of the GAN term do nothing without it: say so rather than run a different study
    gan_only = [flag for flag, given in (
        ("--gan-real", args.gan_real is not None), ("--gan-noise-shift", args.gan_noise_shift),
        ("--gan-stages", args.gan_stages), ("--gan-reversed-weight", args.gan_reversed_weight),
    ) if given]
    if gan_only and not cfg.uses_gan:
        raise ValueError(f"{', '.join(gan_only)} only act with the GAN term on: add "
                         "--gan-weight > 0 (the preset's is 0)")
    return cfg


def load_networks(teacher: str, cfg: DMDConfig, mesh=None) -> Networks:
    """The teacher's experts (each parameter restored straight into its sharding on `mesh` when
    one is given) plus the graphdefs of the trainable and frozen networks."""
    if not Path(teacher, checkpoint.MANIFEST).is_file():
        raise FileNotFoundError(f"teacher checkpoint {teacher} not found (no {checkpoint.MANIFEST})")
    meta = checkpoint.read_manifest(teacher)
    compute = jnp.bfloat16 if cfg.compute_dtype == "bf16" else jnp.float32
    real_dtype = jnp.dtype(meta.get("dtype", "float32")) if compute == jnp.bfloat16 else jnp.float32
    teacher_states, configs = {}, {}
    graphdef_train = graphdef_real = None
    for expert in ("high", "low"):
        module = load_dit_module(teacher, expert, dtype=real_dtype, mesh=mesh)
        configs[expert] = module.cfg
        _, teacher_states[expert] = nnx.split(module)
        graphdef_real, _ = nnx.split(nnx.eval_shape(
            lambda c=module.cfg: WanDiT(c, Precision(real_dtype, compute), rngs=nnx.Rngs(0))))
        graphdef_train, _ = nnx.split(nnx.eval_shape(
            lambda c=module.cfg: WanDiT(c, Precision(jnp.float32, compute), rngs=nnx.Rngs(0),
                                        remat=cfg.remat)))
    boundary = float(meta.get("boundary", cfg.boundary))
    if abs(boundary - cfg.boundary) > 1e-9:
        raise ValueError(f"teacher boundary {boundary} != DMD config boundary {cfg.boundary}")
    return Networks(graphdef_train, graphdef_real, teacher_states, configs, boundary)


def _world(args, preset_name: str) -> World:
    if preset_name == "toy":
        return toy_world()
    if not args.text_cache:
        raise ValueError("--preset a14b needs --text-cache (build it with wanjax.text.cache)")
    shape = tuple(int(v) for v in (args.latent_shape or "16,21,60,104").split(","))
    return cached_world(args.text_cache, shape, 512, args.prompts, args.real_latents)


def _load_student(out: Path) -> dict:
    """Experts of finished stages (for resuming into a later stage)."""
    path = out / "student"
    if not (path / checkpoint.MANIFEST).is_file():
        return {}
    comps = checkpoint.read_manifest(path)["components"]
    return {e: nnx.split(load_dit_module(path, e, jnp.float32))[1]
            for e in ("high", "low") if comps.get(f"dit_{e}", {}).get("trained")}


SETTINGS_FILE = "dmd_config.json"


def _per_stage(count, n: int) -> list[int]:
    """A settings file's `iterations` (one count, or one per stage) as one count per stage (a
    list for another number of stages: zeros, as that run's stages differ anyway)."""
    if isinstance(count, list):
        return count if len(count) == n else [0] * n
    return [count] * n


def _check_settings(out: Path, cfg: DMDConfig, teacher: str, resume: bool) -> None:
    """Resuming continues a run only with the settings that started it: a changed setting would
    silently mix two trainings (finished stages are skipped, checkpoints restored as they are).
    The one exception is a larger `iterations`: it extends the run (see `run`)."""
    path = out / SETTINGS_FILE
    now = json.loads(json.dumps({"teacher": str(teacher), **dataclasses.asdict(cfg)}))
    if resume and path.is_file():
        # a key an older settings file lacks had its default then
        before = {**json.loads(json.dumps(dataclasses.asdict(DMDConfig()))),
                  **json.loads(path.read_text())}
        counts = [_per_stage(d.get("iterations", 0), len(cfg.stages())) for d in (before, now)]
        shorter = any(b > n for b, n in zip(*counts, strict=True))
        changed = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
                   for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)
                   and not (k == "iterations" and not shorter)]
        if changed:
            hint = " (a run can be extended, not shortened)" if shorter else ""
            raise ValueError(f"{out} holds a run with other settings ({'; '.join(changed)})"
                             f"{hint}; pass --no-resume to start it over, or use another --out")
    if distributed.is_main_process():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(now, indent=1) + "\n")
        tmp.replace(path)


def _expert_names(stage: str) -> tuple[str, ...]:
    """The experts a stage trains."""
    return ("high", "low") if stage == "joint" else (stage,)


def _plan_stages(out: Path, cfg: DMDConfig, student: dict, resume: bool) -> list[str]:
    """The stages still to train, after extending or superseding finished ones.

    A stage finished with fewer iterations than `cfg.iterations_of(stage)` resumes from its last
    checkpoint (the learning rates are constant and the prompt order does not depend on the run
    length, so k iterations extended to N equal N straight). A later stage was trained from the shorter
    earlier one: its folder is moved to `<stage>.superseded` and it trains again from the start.
    Both are said even with --quiet (one line each).
    """
    finished = {stage: json.loads((out / stage / "DONE").read_text()).get("iterations")
                for stage in cfg.stages() if resume and (out / stage / "DONE").is_file()}
    _sync("train.dmd: stages read")  # every process decides before the main one moves files
    todo, extend, supersede = [], [], []
    for stage in cfg.stages():
        if extend:
            supersede.append(stage)
            for e in _expert_names(stage):
                student.pop(e, None)
        elif finished.get(stage) is not None and all(e in student for e in _expert_names(stage)):
            if finished[stage] >= cfg.iterations_of(stage):
                continue
            extend.append(stage)
        todo.append(stage)
    if distributed.is_main_process():
        for stage in extend:
            print(f"[{stage}] extending from {finished[stage]} to {cfg.iterations_of(stage)} "
                  "iterations",
                  file=sys.stderr, flush=True)
            (out / stage / "DONE").unlink()
        for stage in (s for s in supersede if (out / s).exists()):
            old = out / f"{stage}.superseded"
            if old.exists():
                shutil.rmtree(old)
            (out / stage).rename(old)
            print(f"[{stage}] trained from the shorter earlier stage: moved to {old.name}, "
                  "training it again", file=sys.stderr, flush=True)
    _sync("train.dmd: stages planned")
    return todo


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def run(args, on_iteration=None) -> Path:
    try:
        preset = importlib.import_module(f"configs.dmd_{args.preset}")
    except ModuleNotFoundError as e:
        raise FileNotFoundError(f"preset {args.preset!r} is not available here ({e.name} is "
                                f"missing)") from None
    cfg = _override(preset.DMD, args)
    teacher = args.teacher or preset.TEACHER
    if teacher is None:
        raise ValueError(f"--preset {args.preset} needs --teacher PATH")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mesh_cfg = parse_mesh(args.mesh) if args.mesh else None  # a bad spec fails before loading
    _check_settings(out, cfg, teacher, not args.no_resume)
    world = _world(args, args.preset)
    if cfg.uses_gan and cfg.gan_real == "data" and world.real_samples is None:
        raise ValueError("--gan-real data needs real samples: the toy world renders them; "
                         "--preset a14b needs --real-latents DIR (latents.npy + prompts.txt)")
    mesh = make_mesh(mesh_cfg) if mesh_cfg is not None else None
    nets = load_networks(teacher, cfg, mesh)
    opts = RunOptions(out=out, log_every=args.log_every, ckpt_every=args.ckpt_every,
                      sample_every=args.sample_every, keep=args.keep, resume=not args.no_resume,
                      quiet=args.quiet, tensorboard=args.tensorboard, teacher=str(teacher),
                      on_iteration=on_iteration)
    stop = StopFlag().install()
    runner = StageRunner(cfg, world, nets, opts, stop)
    student = _load_student(out) if opts.resume else {}
    meta = {"teacher": str(teacher), "preset": args.preset}
    ctx = jax.set_mesh(mesh) if mesh is not None else _null()
    with ctx:
        for stage in _plan_stages(out, cfg, student, opts.resume):
            done = out / stage / "DONE"
            start = time.perf_counter()
            try:
                student.update(runner.run(stage, student))
            finally:  # a stopped run's part counts too: the stage's time is the sum of its runs
                seconds = _add_wall_time(out / stage, time.perf_counter() - start)
            if distributed.is_main_process():
                export_student(out, cfg, nets, student, meta)
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps({"stage": stage, "iterations": cfg.iterations_of(stage),
                                        "seconds": round(seconds, 1)}) + "\n")
    return out / "student"


WALL_TIME_FILE = "wall_seconds.json"


def _add_wall_time(stage_dir: Path, seconds: float) -> float:
    """Adds one run's wall time to the stage's total (resumed and extended runs add up; a
    killed process's part is lost) and returns the total."""
    path = stage_dir / WALL_TIME_FILE
    total = seconds + (json.loads(path.read_text())["seconds"] if path.is_file() else 0.0)
    if distributed.is_main_process():
        stage_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seconds": total}) + "\n")
    return total


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        distributed.initialize_from_args(args)
        path = run(args)
    except (ValueError, FileNotFoundError, NonFiniteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 130
    if distributed.is_main_process():
        print(f"student written to {path} (metrics: {Path(args.out) / 'metrics.jsonl'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
