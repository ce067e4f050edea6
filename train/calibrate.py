"""`python -m train.calibrate`: per-expert W4A4 calibration of a DMD student on its own trajectory.

    python -m train.calibrate --out outputs/calibrate/hif4          # the toy student
    python -m train.calibrate --student PATH --out DIR --algorithm smooth+gptq --protect auto

Runs the few-step student on calibration prompts at its deployment step count, routes each step
to its expert exactly as sampling does, records per-layer input statistics per (expert, step),
keeps the most sensitive block(s) of each expert in full precision, and quantizes every other
linear inside the transformer blocks (W4A4, groups of 64 along in_features) with smoothing and /
or GPTQ; the high-noise expert first, then the low-noise expert on the trajectory of the already
quantized high expert. Writes DIR/calibration.json and the packed (HiF4) or fake-quant experts;
load them with `train.calibration.load_quantized_student(DIR)`. Design: train/calibration/.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

from train.calibration import setup
from train.calibration.data import WORLDS
from train.calibration.layers import ALGORITHMS
from train.calibration.manifest import CalibrationManifest, save_quantized_student
from train.calibration.pipeline import STATS_MODES, TRAJECTORIES, CalibrationOptions, calibrate
from wanjax.argtypes import nonnegative_int, positive_int
from wanjax.quant.formats import FORMATS


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    d = "(default: %(default)s)"
    p.add_argument("--student", help=f"student checkpoint (default: {setup.DEFAULT_STUDENT})")
    p.add_argument("--teacher", help="teacher checkpoint for --trajectory teacher (default: the "
                   "one the student was distilled from / the toy teacher)")
    p.add_argument("--trajectory", choices=TRAJECTORIES, default="student",
                   help=f"whose sampling trajectory feeds the statistics {d}")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="smooth+gptq", help=d)
    p.add_argument("--format", choices=sorted(FORMATS), default="hif4", help=d)
    p.add_argument("--protect", default="auto",
                   help=f"auto (sensitivity sweep), none, or a list like blocks.0,blocks.39 {d}")
    p.add_argument("--protect-k", type=nonnegative_int, default=1, help=f"blocks kept per expert (auto) {d}")
    p.add_argument("--stats", choices=STATS_MODES, default="per-expert", help=d)
    p.add_argument("--include", default="blocks.*",
                   help=f"comma-separated path globs of the linears to quantize {d}")
    p.add_argument("--exclude", default="", help="comma-separated path globs kept in fp")
    p.add_argument("--prompts", help="calibration prompt file, one per line")
    p.add_argument("--num-prompts", type=positive_int, default=16, help=f"calibration prompts {d}")
    p.add_argument("--calib-seed", type=int, default=1234, help=f"calibration noise seed {d}")
    p.add_argument("--batch-size", type=positive_int, default=16, help=f"prompts per forward {d}")
    p.add_argument("--world", choices=WORLDS, default="auto",
                   help=f"prompt/context source; auto: toy for a toy student, else cache {d}")
    p.add_argument("--text-cache", help="text-embedding cache for real students")
    p.add_argument("--latent-shape", help="C,F,H,W of the latents (cache/synthetic worlds)")
    p.add_argument("--mesh", default="", help="device mesh, e.g. fsdp=4 or fsdp=2,sequence=2")


def options_from_args(args, **overrides) -> CalibrationOptions:
    protect = args.protect if args.protect in ("auto", "none") else tuple(
        s.strip() for s in args.protect.split(",") if s.strip())
    split = lambda s: tuple(v.strip() for v in s.split(",") if v.strip())  # noqa: E731
    opts = CalibrationOptions(
        fmt=args.format, algorithm=args.algorithm, trajectory=args.trajectory, stats=args.stats,
        protect=protect, protect_k=args.protect_k, include=split(args.include),
        exclude=split(args.exclude))
    return dataclasses.replace(opts, **overrides)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (calibrated student)")
    p.add_argument("--steps", type=positive_int,
                   help="deployment step count (default: the student's)")
    p.add_argument("--storage", choices=("auto", "packed", "fake-quant"), default="auto",
                   help="auto: packed HiF4 weights for hif4, fake-quant otherwise (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_calibration_args(p)
    return p


def run(args) -> Path:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    opts = options_from_args(args)
    path = setup.resolve_student(args.student)
    mesh = setup.mesh_for(args.mesh)
    student, base_cfg, meta = setup.load_student(path, mesh)
    cfg = setup.student_config(base_cfg, args.steps) if args.steps else base_cfg
    kind, world = setup.world_for(args.world, student, args.text_cache, args.latent_shape)
    teacher = teacher_cfg = None
    if opts.trajectory == "teacher":
        tpath = args.teacher or setup.default_teacher(meta, kind)
        if not tpath:
            raise ValueError("--trajectory teacher needs --teacher PATH")
        teacher = setup.load_teacher(tpath, mesh)
        teacher_cfg = setup.teacher_config(kind, cfg.boundary)
    prompts = setup.prompts_for(kind, world, args.prompts, args.num_prompts)
    batches = setup.make_batches(world, prompts, args.calib_seed, args.batch_size)
    modules = list(student.values()) + (list(teacher.values()) if teacher else [])
    ctx = setup.mesh_context(mesh, modules)
    start = time.time()
    with ctx:
        quant, report = calibrate(student, cfg, batches, opts, teacher=teacher,
                                  teacher_cfg=teacher_cfg)
    storage = args.storage if args.storage != "auto" else (
        "packed" if opts.fmt == "hif4" else "fake-quant")
    manifest = CalibrationManifest(
        quant_format=opts.fmt, storage=storage, boundary=cfg.boundary,
        sample_config=dataclasses.asdict(cfg), experts=report["experts"], options=opts.to_json(),
        source={"student": str(path), "world": kind, "prompts": prompts,
                "calib_seed": args.calib_seed, "steps": len(cfg.schedule().timesteps),
                "mesh": args.mesh, "wall_seconds": round(time.time() - start, 1)})
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_quantized_student(tmp, quant, manifest)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        out = run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"calibrated student written to {out} ({out / 'calibration.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
