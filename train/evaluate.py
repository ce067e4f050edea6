"""`python -m train.evaluate`: does the W4A4 student stay close to its FP self? One report.

    python -m train.evaluate                          # toy student, N in {4, 8, 20}, ablations
    python -m train.evaluate --student PATH --out DIR --steps 4,8 --ablations none

For each N it calibrates the student at N steps (the deployment count; `train.calibrate`'s
pipeline) and compares FP-student(N), quantized-student(N) and FP-teacher(40) with the same
seeds: per-step velocity cosine / relative error per expert, final-latent relative error,
PSNR / SSIM of the decoded frames, consecutive-frame SSIM, and on the toy world the toy quality
metrics. Ablations at `--ablation-steps` change one thing each: teacher-trajectory calibration,
joint statistics, no protected block, NVFP4/MXFP4/INT4 instead of HiF4, and the algorithm.
Writes OUT/report.md, OUT/per_step_error.png and OUT/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from train.calibrate import add_calibration_args, options_from_args
from train.calibration import evaluation, metrics, setup
from train.calibration.pipeline import calibrate
from train.calibration.report import write_report
from wanjax.argtypes import at_least, positive_int, positive_int_list

ABLATIONS = {
    "teacher-trajectory": {"trajectory": "teacher"},
    "joint-stats": {"stats": "joint"},
    "unprotected": {"protect": "none"},
    "nvfp4": {"fmt": "nvfp4"},
    "mxfp4": {"fmt": "mxfp4"},
    "int4": {"fmt": "int4"},
    "rtn": {"algorithm": "rtn"},
    "smooth": {"algorithm": "smooth"},
    "gptq": {"algorithm": "gptq"},
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = "(default: %(default)s)"
    p.add_argument("--out", default="outputs/quant_eval", help=f"report folder {d}")
    p.add_argument("--steps", type=positive_int_list, default="4,8,20",
                   help=f"student step counts, comma-separated {d}")
    p.add_argument("--teacher-steps", type=positive_int, default=40, help=f"teacher steps {d}")
    p.add_argument("--ablations", default="all",
                   help=f"all, none, or a list from {','.join(ABLATIONS)} {d}")
    p.add_argument("--ablation-steps", type=positive_int, default=None,
                   help="step count of the ablations (default: the student's own)")
    p.add_argument("--per-prompt", type=at_least(2), default=8,
                   help="toy world: samples per prompt (x64); 8 gives 512 samples, a standard "
                        f"error of ~0.02 on accuracies, well inside the report's margins {d}")
    p.add_argument("--num-eval", type=positive_int, default=16, help=f"other worlds: eval prompts {d}")
    p.add_argument("--seed", type=int, default=0, help=f"evaluation noise seed {d}")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help=f"calibration sets per ablation (mean, spread, paired orderings) {d}")
    p.add_argument("--quantized", help="also evaluate a saved calibrated student (its own N)")
    p.add_argument("--classifier", help="toy-world classifier for the quality metrics (default: "
                   "configs/toy.py CLASSIFIER_PATH)")
    add_calibration_args(p)
    return p


def _ablation_names(spec: str) -> list[str]:
    if spec == "all":
        return list(ABLATIONS)
    if spec == "none":
        return []
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in ABLATIONS]
    if bad:
        raise ValueError(f"unknown ablations {bad}; choose from {list(ABLATIONS)}")
    return names


def _quality_fn(kind: str, prompts: list[str], notes: list[str], classifier: str | None):
    if kind != "toy":
        notes.append("toy quality metrics skipped: not the toy world")
        return None
    from configs import toy

    path = classifier or toy.CLASSIFIER_PATH
    if not Path(path).exists():
        notes.append(f"toy quality metrics skipped: no classifier at {path}")
        return None
    from train.toy import metrics as toy_metrics
    from train.toy.classifier import load_classifier

    model = load_classifier(path)
    notes.append(f"toy quality metrics with the classifier at {path}")
    return lambda videos: toy_metrics.evaluate_samples(np.asarray(videos), prompts,
                                                       classifier=model)


def run(args) -> Path:
    start = time.time()
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    steps = list(args.steps)
    names = _ablation_names(args.ablations)
    path = setup.resolve_student(args.student)
    mesh = setup.mesh_for(args.mesh)
    student, base_cfg, meta = setup.load_student(path, mesh)
    deploy = len(base_cfg.schedule().timesteps)
    ablation_steps = args.ablation_steps or deploy
    main_opts = options_from_args(args)
    kind, world = setup.world_for(args.world, student, args.text_cache, args.latent_shape)
    toy = kind == "toy"
    notes: list[str] = []

    tpath = args.teacher or setup.default_teacher(meta, kind)
    teacher = None
    if tpath:
        try:
            teacher = setup.load_teacher(tpath, mesh)
        except FileNotFoundError as e:
            notes.append(f"no teacher: {e}")
    if teacher is None:
        dropped = [n for n in names if ABLATIONS[n].get("trajectory") == "teacher"]
        names = [n for n in names if n not in dropped]
        notes.append("teacher rows and the teacher-trajectory ablation skipped (no teacher)")
        if main_opts.trajectory == "teacher":
            raise ValueError("--trajectory teacher needs a teacher checkpoint")
    tcfg = setup.teacher_config(kind, base_cfg.boundary, args.teacher_steps)

    if toy:
        from train.toy.data import eval_prompts

        prompts = eval_prompts(args.per_prompt)
    else:
        prompts = setup.prompts_for(kind, world, None, args.num_eval, offset=1)
    calib_prompts = setup.prompts_for(kind, world, args.prompts, args.num_prompts)
    eval_b = setup.make_batches(world, prompts, args.seed, args.batch_size)
    # Calibration set r: other prompts (toy: shifted by r) and other noise (seed + r).
    calib_sets = [setup.make_batches(world, setup.prompts_for(kind, world, args.prompts,
                                                              args.num_prompts, offset=r),
                                     args.calib_seed + r, args.batch_size)
                  for r in range(max(args.repeats, 1))]
    quality = _quality_fn(kind, prompts, notes, args.classifier)
    modules = list(student.values()) + (list(teacher.values()) if teacher else [])
    ctx = setup.mesh_context(mesh, modules)

    results: dict = {"steps": {}, "ablations": {}, "quality": {}, "notes": notes}
    with ctx:
        teacher_final = None
        if teacher is not None:
            print(f"[evaluate] teacher, {args.teacher_steps} steps", flush=True)
            teacher_final = evaluation.rollout(teacher, tcfg, eval_b, keep=False).final
            if quality:
                results["quality"][f"FP-teacher({args.teacher_steps})"] = quality(teacher_final)
        for n in sorted(set(steps) | {ablation_steps}):
            cfg = setup.student_config(base_cfg, n)
            print(f"[evaluate] {n} steps: FP student", flush=True)
            fp = evaluation.rollout(student, cfg, eval_b)

            def one(opts, repeat=0, cfg=cfg, fp=fp):
                quant, rep = calibrate(student, cfg, calib_sets[repeat], opts, teacher=teacher,
                                       teacher_cfg=tcfg, log=lambda m: print(m, flush=True))
                run_q = evaluation.rollout(quant, cfg, eval_b)
                forced = evaluation.forced_velocities(quant, cfg, eval_b, fp)
                return rep, run_q, evaluation.compare(run_q, forced, fp, toy, teacher_final)

            main_first = None
            if n in steps:
                print(f"[evaluate] {n} steps: calibrating ({main_opts.algorithm})", flush=True)
                main_first = one(main_opts)
                rep, run_q, cmp = main_first
                entry = {"fp": evaluation.self_row(fp, toy, teacher_final), "quant": cmp,
                         "calibration": rep}
                if teacher_final is not None:
                    entry["teacher"] = _teacher_vs_fp(teacher_final, fp.final, toy)
                results["steps"][str(n)] = entry
                if quality:
                    results["quality"][f"FP-student({n})"] = quality(fp.final)
                    results["quality"][f"quant-student({n})"] = quality(run_q.final)
            if n == ablation_steps:
                for name in ["main", *names]:
                    opts = main_opts if name == "main" else dataclasses.replace(
                        main_opts, **ABLATIONS[name])
                    runs = []
                    for r in range(args.repeats):
                        print(f"[evaluate] ablation {name} ({n} steps, calibration set {r})",
                              flush=True)
                        runs.append(main_first if (name == "main" and r == 0 and main_first)
                                    else one(opts, r))
                    rep, run_q, cmp = runs[0]
                    results["ablations"][name] = {
                        "options": opts.to_json(), "compare": cmp,
                        "protected": {e: x["protected"] for e, x in rep["experts"].items()},
                        "repeats": [{k: c[k] for k in SUMMARY} for _, _, c in runs]}
                    if quality and name != "main":
                        results["quality"][f"{name}({n})"] = quality(run_q.final)
        if args.quantized:
            results["saved"] = _saved(args.quantized, student, eval_b, toy)
    results["setup"] = {
        "student": str(path), "world": kind, "teacher": tpath if teacher else None,
        "teacher_steps": args.teacher_steps, "format": main_opts.fmt,
        "algorithm": main_opts.algorithm, "trajectory": main_opts.trajectory,
        "stats": main_opts.stats, "protect": main_opts.protect, "protect_k": main_opts.protect_k,
        "include": ",".join(main_opts.include), "calib_prompts": len(calib_prompts),
        "calib_seed": args.calib_seed, "repeats": args.repeats, "eval_samples": len(prompts), "seed": args.seed,
        "deploy_steps": deploy, "ablation_steps": ablation_steps, "mesh": args.mesh,
        "wall_seconds": time.time() - start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    return write_report(out, results)


SUMMARY = ("min_step_cos", "mean_step_rel", "final_rel", "psnr_vs_fp", "ssim_vs_fp")


def _teacher_vs_fp(teacher_final, fp_final, toy: bool) -> dict:
    ft, rng = evaluation.frames(teacher_final, toy)
    ff, _ = evaluation.frames(fp_final, toy)
    out = {"final_rel_vs_fp": float(metrics.relative_error(teacher_final, fp_final).mean()),
           "psnr_vs_fp": float(np.mean(np.minimum(metrics.psnr(ft, ff, rng), 100))),
           "ssim_vs_fp": float(metrics.ssim(ft, ff, rng).mean())}
    if ft.ndim == 5 and ft.shape[2] > 1:
        out["temporal_ssim"] = float(metrics.temporal_ssim(ft, rng).mean())
    return out


def _saved(qpath: str, student, eval_b, toy: bool) -> dict:
    """Sample a saved calibrated student through `load_quantized_student` at its own N."""
    from train.calibration.manifest import load_quantized_student

    model, cfg, _ = load_quantized_student(qpath, "fake")
    experts = {"high": model.high, "low": model.low}
    fp = evaluation.rollout(student, cfg, eval_b)
    run_q = evaluation.rollout(experts, cfg, eval_b)
    forced = evaluation.forced_velocities(experts, cfg, eval_b, fp)
    cmp = evaluation.compare(run_q, forced, fp, toy)
    return {"path": qpath, "mode": "fake", "steps": len(cfg.schedule().timesteps),
            "final_rel": cmp["final_rel"], "min_step_cos": cmp["min_step_cos"]}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
