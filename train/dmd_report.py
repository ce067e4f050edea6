"""`python -m train.dmd_report`: DMD students of 1, 2 and 4 steps against the teacher, on the toy world.

Trains one student per step count with `python -m train.dmd` (the toy preset's settings, phased),
then scores every sampler on the same prompts and seeds with the toy metrics: real data (the
floor), the teacher at 40 UniPC steps with CFG, the teacher at 1/2/4 steps on the students' own
grids (x0-renoise, the students' transitions, with CFG), and each student. Writes OUT/report.md,
OUT/report.json and one PNG of samples per row; every number in them comes from this run, and
the verdicts are computed from those numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

from configs import dmd_toy, toy
from train import dmd
from train.dmd_config import MOE_MODES
from train.toy import metrics
from train.toy.data import eval_prompts
from train.toy.sample import sample_videos, teacher_config
from train.toy.teacher import load_teacher
from wanjax.argtypes import (
    at_least,
    choice_list,
    nonnegative_float,
    positive_float,
    positive_float_list,
    positive_int_list,
    stage_count_list,
)
from wanjax.io import checkpoint
from wanjax.pipeline import student_sample_config

STEP_COUNTS = (1, 2, 4)
COLUMNS = ("prompt_acc", "attr_acc", "real_rate", "on_mode", "mode_tv", "fd", "swd", "diversity",
           "diversity_real")
# "A wide margin" for the 1- and 2-step students, fixed before any student was scored: FD at
# most half the teacher's at the same step count, and the prompt error rate (1 - prompt_acc) at
# most half the teacher's (ratios, like the MMD ratios of the 2-D check in dmd_notes section 6).
FD_RATIO = 2.0
ERROR_RATIO = 2.0


def train_student(steps: int, out: Path, teacher: str,
                  iterations: int | tuple[int, ...] | None, seed: int,
                  regression_weight: float = 0.0, gan_weight: float = 0.0,
                  noise_shift: float | None = None, gan_real: str = "teacher",
                  gan_noise_shift: float | None = None, gan_reversed_weight: float = 0.0,
                  gan_stages: tuple[str, ...] | None = None,
                  guidance: tuple[float, float] | None = None, moe_mode: str = "phased",
                  extra_args: tuple[str, ...] = ()) -> Path:
    """Trains one student with `python -m train.dmd` (`extra_args`: more of its flags).

    `iterations`: one count for every phased stage, or one per stage (high, low). `gan_stages`
    keeps only the named phased stages that this student has; a student with none of them (a
    joint one has none) trains without the GAN term."""
    if gan_weight and gan_stages is not None:
        gan_stages = gan_stages_of(steps, gan_stages, moe_mode)
        if not gan_stages:
            gan_weight = 0.0
    raw = ",".join(str(int(t)) for t in toy.FEW_STEP_TIMESTEPS[steps])
    argv = ["--teacher", teacher, "--out", str(out), "--student-steps", raw, "--seed", str(seed),
            "--quiet"]
    if iterations:
        counts = iterations if isinstance(iterations, tuple) else (iterations,)
        argv += ["--iterations", ",".join(str(c) for c in counts)]
    if regression_weight:
        argv += ["--regression-weight", str(regression_weight)]
    if gan_weight:
        argv += ["--gan-weight", str(gan_weight)]
    if noise_shift is not None:
        argv += ["--noise-shift", str(noise_shift)]
    if guidance is not None:  # (high expert, low expert)
        argv += ["--guidance", ",".join(str(g) for g in guidance)]
    if moe_mode != "phased":
        argv += ["--moe-mode", moe_mode]
    if gan_weight and gan_real != "teacher":
        argv += ["--gan-real", gan_real]
    if gan_weight and gan_noise_shift is not None:
        argv += ["--gan-noise-shift", str(gan_noise_shift)]
    if gan_weight and gan_reversed_weight:
        argv += ["--gan-reversed-weight", str(gan_reversed_weight)]
    if gan_weight and gan_stages is not None:
        argv += ["--gan-stages", ",".join(gan_stages)]
    argv += list(extra_args)
    return dmd.run(dmd._parser().parse_args(argv))


def student_stages(steps: int, moe_mode: str = "phased") -> tuple[str, ...]:
    """The training stages of the toy preset's `steps`-step student, e.g. ('high',) for 1 step
    (('joint',) for a joint one)."""
    raw = tuple(float(t) for t in toy.FEW_STEP_TIMESTEPS[steps])
    return dataclasses.replace(dmd_toy.DMD, raw_timesteps=raw, moe_mode=moe_mode).stages()


def gan_stages_of(steps: int, wanted: tuple[str, ...], moe_mode: str = "phased"
                  ) -> tuple[str, ...]:
    """The stages of `wanted` that the `steps`-step student has (empty: no GAN term for it)."""
    return tuple(s for s in student_stages(steps, moe_mode) if s in wanted)


def stage_seconds(run: Path) -> float:
    """Training wall time of a `train.dmd` output folder: the sum over its finished stages (each
    DONE file records its stage's total over every run that trained it, so a resumed report
    reports the whole time)."""
    return sum(json.loads(done.read_text()).get("seconds", 0.0) for done in run.glob("*/DONE"))


def ratios(rows: dict, n: int) -> tuple[float, float]:
    """(teacher FD / student FD, teacher prompt error rate / student's) at `n` steps."""
    t, s = rows[f"teacher {n}"], rows[f"student {n}"]
    return (t["fd"] / max(s["fd"], 1e-9),
            (1.0 - t["prompt_acc"]) / max(1.0 - s["prompt_acc"], 1e-9))


def wide_margin(rows: dict, n: int) -> bool:
    """The acceptance rule for the `n`-step student, on one scoring's rows."""
    fd_ratio, err_ratio = ratios(rows, n)
    return fd_ratio >= FD_RATIO and err_ratio >= ERROR_RATIO


def verdicts(rows: dict) -> list[str]:
    """One line per acceptance check, computed from one scoring's table."""
    lines = []
    for n in (1, 2):
        t, s = rows[f"teacher {n}"], rows[f"student {n}"]
        fd_ratio, err_ratio = ratios(rows, n)
        lines.append(
            f"- {n}-step student vs teacher at {n} step(s): FD {s['fd']:.1f} vs {t['fd']:.1f} "
            f"({fd_ratio:.1f}x lower), SWD {s['swd']:.4f} vs {t['swd']:.4f}, prompt accuracy "
            f"{s['prompt_acc']:.3f} vs {t['prompt_acc']:.3f} (error rate {err_ratio:.1f}x "
            f"lower), on-mode {s['on_mode']:.3f} vs {t['on_mode']:.3f}: "
            f"{'wide margin' if wide_margin(rows, n) else 'NOT a wide margin'} (needs FD and "
            f"prompt error rate each >= {FD_RATIO:g}x lower).")
    s4, t4, t40 = rows["student 4"], rows["teacher 4"], rows["teacher 40"]
    lines.append(
        f"- 4-step student (reported as is): FD {s4['fd']:.1f} (teacher 4 steps {t4['fd']:.1f}, "
        f"40 steps {t40['fd']:.1f}), prompt accuracy {s4['prompt_acc']:.3f} (teacher 4 steps "
        f"{t4['prompt_acc']:.3f}, 40 steps {t40['prompt_acc']:.3f}); diversity {s4['diversity']:.3f}"
        f" vs teacher 40 steps {t40['diversity']:.3f} and real data {s4['diversity_real']:.3f}, "
        f"mode TV {s4['mode_tv']:.3f} vs {t40['mode_tv']:.3f}.")
    return lines


def overall(by_scoring: dict) -> dict[int, bool]:
    """`{n: wide margin}` for the 1- and 2-step students: the rule must hold under every scoring
    (a win that flips with raw vs clipped scoring is not a wide margin)."""
    return {n: all(wide_margin(rows, n) for rows in by_scoring.values()) for n in (1, 2)}


def overall_lines(by_scoring: dict) -> list[str]:
    """The final verdict per student, naming the scorings under which the rule holds."""
    lines = []
    for n, ok in overall(by_scoring).items():
        holds = [s for s, rows in by_scoring.items() if wide_margin(rows, n)]
        lines.append(f"- {n}-step student: wide margin under every scoring" if ok else
                     f"- {n}-step student: NOT a wide margin (the rule holds under: "
                     f"{', '.join(holds) or 'none'})")
    return lines


def _save_grid(out: Path, name: str, videos, per_prompt: int) -> None:
    import imageio.v3 as iio

    from train.toy.evaluate import video_grid

    pick = list(range(0, len(videos), per_prompt))[::4]  # 16 prompts, their first sample
    iio.imwrite(out / (re.sub(r"[^\w.-]+", "_", name).strip("_") + ".png"),
                video_grid(videos[pick]))


def _per_student(p: argparse.ArgumentParser, flag: str, values: tuple) -> dict:
    """One value for every student, or one per step count in STEP_COUNTS order."""
    if len(values) not in (1, len(STEP_COUNTS)):
        p.error(f"{flag} takes one number or {len(STEP_COUNTS)} (for {STEP_COUNTS} steps)")
    return dict(zip(STEP_COUNTS, values * len(STEP_COUNTS) if len(values) == 1 else values,
                    strict=True))


def _check_stage_counts(p: argparse.ArgumentParser, iters: dict, modes: dict) -> None:
    """A `HIGH:LOW` count needs a student with exactly those phased stages."""
    for n, count in iters.items():
        stages = student_stages(n, modes[n])
        if isinstance(count, tuple) and len(count) != len(stages):
            p.error(f"--iterations: the {n}-step student has {len(stages)} training stage(s) "
                    f"({', '.join(stages)}), so its entry takes {len(stages)} count(s) joined "
                    f"by ':', got {':'.join(str(c) for c in count)}")


def _iterations_text(count: int | tuple[int, ...]) -> str:
    if not isinstance(count, tuple):
        return str(count)
    return " + ".join(f"{c} {stage}" for c, stage in zip(count, ("high", "low"), strict=False))


def _guidance_per_student(p: argparse.ArgumentParser, high: tuple | None,
                          low: tuple | None) -> dict:
    """{steps: (high, low) or None (the preset's)}; an expert not given keeps the preset's."""
    if high is None and low is None:
        return dict.fromkeys(STEP_COUNTS)
    highs = _per_student(p, "--guidance-high", high or (dmd_toy.DMD.guidance_high,))
    lows = _per_student(p, "--guidance-low", low or (dmd_toy.DMD.guidance_low,))
    return {n: (highs[n], lows[n]) for n in STEP_COUNTS}


def _per_step_text(values: dict, fmt) -> str:
    """'a (1 step), b (2 steps), c (4 steps)' for one value per student."""
    return ", ".join(f"{fmt(values[n])} ({n} step{'s' if n > 1 else ''})" for n in STEP_COUNTS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.dmd_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/dmd_report", help="output folder (%(default)s)")
    p.add_argument("--teacher", default=toy.TEACHER_PATH, help="toy teacher (%(default)s)")
    p.add_argument("--iterations", type=stage_count_list, default="2000",
                   help="critic iterations per stage, 5 per generator update: one number for "
                   "every student or one each for the 1-, 2- and 4-step students, e.g. "
                   "9000,5000,2000, over 4 h on 2 CPU cores; a student's entry may give each "
                   "phased stage its own count as HIGH:LOW, e.g. 8000,3000:5000,2000 "
                   "(%(default)s; the 1- and 2-step students gain up to about 9000 and 5000); "
                   "rerun with larger counts to extend a finished report's students")
    p.add_argument("--regression-weight", type=nonnegative_float, default=0.0,
                   help="weight of the teacher-ODE regression term (%(default)s: plain DMD2)")
    p.add_argument("--regression-students", type=positive_int_list, default="1,2,4",
                   help="step counts of the students that get the regression term "
                   "(%(default)s)")
    p.add_argument("--gan-weight", type=nonnegative_float, default=0.0,
                   help="weight of DMD2's GAN term against the teacher's ODE samples "
                   "(%(default)s: off)")
    p.add_argument("--gan-students", type=positive_int_list, default="1,2,4",
                   help="step counts of the students that get the GAN term (%(default)s)")
    p.add_argument("--gan-real", choices=("teacher", "data"), default="teacher",
                   help="the GAN term's real samples: the teacher's ODE endpoints or fresh real "
                   "renders (%(default)s)")
    p.add_argument("--noise-shift", type=positive_float_list, default=None,
                   help="shift of the students' DMD / critic / GAN noise levels: one number for "
                   "every student or one each for the 1-, 2- and 4-step students, e.g. 1,5,5 "
                   "(default: the student grid's, 5)")
    for expert in ("high", "low"):
        p.add_argument(f"--guidance-{expert}", type=positive_float_list, default=None,
                       help=f"the real score's CFG scale at the {expert}-noise expert's levels "
                       "in the students' DMD term: one number for every student or one each "
                       "for the 1-, 2- and 4-step students, e.g. 3,5,3 (default: the toy "
                       "preset's 3, the teacher's own sampling scale; the teacher rows always "
                       "sample with 3)")
    p.add_argument("--gan-noise-shift", type=positive_float, default=None,
                   help="the GAN term's own noise-level shift (default: it shares the DMD "
                   "term's levels)")
    p.add_argument("--gan-reversed-weight", type=nonnegative_float, default=0.0,
                   help="weight of real renders played backwards as extra fakes for the GAN's "
                   "discriminator (%(default)s: off)")
    p.add_argument("--gan-stages", choices=("high", "low", "high,low"), default=None,
                   metavar="{high|low|high,low}",
                   help="the phased stages that run the GAN term, e.g. low (a student without "
                   "that stage, like the 1-step one, then trains without it) (default: all)")
    p.add_argument("--moe-mode", type=choice_list(*MOE_MODES), default="phased",
                   help="dual-expert handling of the students (train.dmd --moe-mode): one for "
                   "every student or one each for the 1-, 2- and 4-step students, e.g. "
                   "phased,joint,phased (%(default)s)")
    p.add_argument("--per-prompt", type=at_least(2), default=8,
                   help="samples per prompt, x64 prompts (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="training and sampling seed (%(default)s)")
    args = p.parse_args(argv)
    iters = _per_student(p, "--iterations", args.iterations)
    modes = _per_student(p, "--moe-mode", args.moe_mode)
    _check_stage_counts(p, iters, modes)
    shifts = _per_student(p, "--noise-shift", args.noise_shift or (None,))
    guidance = _guidance_per_student(p, args.guidance_high, args.guidance_low)
    for flag in ("regression_students", "gan_students"):
        if not set(getattr(args, flag)) <= set(STEP_COUNTS):
            p.error(f"--{flag.replace('_', '-')} must be among {STEP_COUNTS}")
    reg = {n: args.regression_weight if n in args.regression_students else 0.0
           for n in STEP_COUNTS}
    gan_stages = None if args.gan_stages is None else tuple(args.gan_stages.split(","))
    gan_w = {n: args.gan_weight if n in args.gan_students
             and (gan_stages is None or gan_stages_of(n, gan_stages, modes[n])) else 0.0
             for n in STEP_COUNTS}
    try:
        teacher = load_teacher(args.teacher)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = eval_prompts(args.per_prompt)
    reference = metrics.real_videos(prompts)  # held-out renders: rendered once, not per row
    rows: dict = {scoring: {} for scoring in metrics.SCORINGS}
    timings = {}

    def score(name: str, videos) -> None:
        for scoring, table in rows.items():
            table[name] = metrics.evaluate_samples(metrics.scored_as(scoring, videos), prompts,
                                                   reference=reference)
        _save_grid(out, name, videos, args.per_prompt)
        print(f"[report] {name}: " + ", ".join(
            f"{scoring} FD {t[name]['fd']:.1f}, prompt accuracy {t[name]['prompt_acc']:.3f}"
            for scoring, t in rows.items()), flush=True)

    score("real data (floor)", metrics.real_videos(prompts, split="reference"))
    score("teacher 40", sample_videos(teacher, prompts, teacher_config(40), seed=args.seed))
    for n in STEP_COUNTS:
        score(f"teacher {n}", sample_videos(teacher, prompts, teacher_config(n, "x0_renoise"),
                                            seed=args.seed))
    for n in STEP_COUNTS:
        print(f"[report] training the {n}-step student", flush=True)
        path = train_student(n, out / f"student_{n}", args.teacher, iters[n], args.seed,
                             reg[n], gan_w[n], shifts[n], args.gan_real,
                             args.gan_noise_shift, args.gan_reversed_weight,
                             gan_stages, guidance=guidance[n], moe_mode=modes[n])
        timings[f"student {n}"] = stage_seconds(out / f"student_{n}")
        student = load_teacher(path)
        cfg = student_sample_config(checkpoint.read_manifest(path))
        score(f"student {n}", sample_videos(student, prompts, cfg, seed=args.seed))
    text = "\n".join([
        "# DMD on the toy world: students vs teacher", "",
        f"{len(prompts)} samples ({args.per_prompt} for each of the 64 prompts), sampling seed "
        f"{args.seed}, teacher `{args.teacher}`. Distances (FD on the classifier's features, SWD "
        "on pixels) are against held-out real renders, lower is better; accuracies come from the "
        "toy classifier; `teacher N` samples the teacher with CFG on the N-step student grid "
        "(x0-renoise); `teacher 40` is 40 UniPC steps with CFG. Students sample with CFG off. "
        "Students: dual-expert handling " + _per_step_text(modes, str)
        + "; critic iterations per stage "
        + _per_step_text(iters, _iterations_text)
        + "; teacher-ODE regression "
        "weight " + _per_step_text(reg, "{:g}".format)
        + "; GAN weight " + ", ".join(f"{gan_w[n]:g}" for n in STEP_COUNTS)
        + " (1, 2, 4 steps; 0 and 0: plain DMD2), its real samples "
        + ("the teacher's ODE endpoints" if args.gan_real == "teacher" else "real renders")
        + "; noise-level shift of the losses "
        + _per_step_text(shifts, lambda s: "the grid's (5)" if s is None else f"{s:g}")
        + "; the real score's CFG scale "
        + " (high / low expert) " + _per_step_text(guidance, lambda g: "/".join(
            f"{v:g}" for v in (g or (dmd_toy.DMD.guidance_high, dmd_toy.DMD.guidance_low))))
        + ("" if args.gan_noise_shift is None
           else f", the GAN term's own {args.gan_noise_shift:g}")
        + ("" if not args.gan_reversed_weight
           else f"; reversed real renders as fakes, weight {args.gan_reversed_weight:g}")
        + ("" if gan_stages is None else f"; the GAN term only in the {args.gan_stages} "
           "stage(s)") + ".",
        "", "Every sampler is scored twice: on its raw output (what the judge was trained and "
        "checked on) and clipped to [-1, 1] (what the toy pipeline and the PNG/MP4 writers "
        "output; samplers overshoot the range). A student beats the teacher by a wide margin "
        "only if the rule holds under both.", "",
        *[line for scoring, table in rows.items() for line in (
            f"## {scoring.capitalize()} scoring", "", metrics.format_table(table, COLUMNS), "",
            *verdicts(table), "")],
        "## Verdict", "",
        *overall_lines(rows), "",
        "Training wall time (s): " + ", ".join(f"{k}: {v:.0f}" for k, v in timings.items()),
        "", "Sample grids (one row per prompt, frames left to right): "
        + ", ".join(f"`{re.sub(r'[^\w.-]+', '_', k).strip('_')}.png`" for k in rows["raw"]), "",
    ])
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps(
        {"rows": rows, "wide_margin": {str(n): ok for n, ok in overall(rows).items()},
         "timings_s": timings, "seed": args.seed, "per_prompt": args.per_prompt,
         "teacher": args.teacher, "iterations": {str(n): iters[n] for n in STEP_COUNTS},
         "regression_weight": reg, "gan_weight": gan_w, "gan_real": args.gan_real,
         "noise_shift": {str(n): shifts[n] for n in STEP_COUNTS},
         "guidance": {str(n): guidance[n] for n in STEP_COUNTS},
         "moe_mode": {str(n): modes[n] for n in STEP_COUNTS},
         "gan_noise_shift": args.gan_noise_shift,
         "gan_reversed_weight": args.gan_reversed_weight}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
