"""`python -m train.demo` (what `make demo` runs): the whole pipeline on the built-in toy world.

committed toy teacher -> `train.dmd` (4-step phased student, short schedule) -> `train.calibrate`
(HiF4 W4A4, per expert, on the student's own trajectory, protected block, packed weights) ->
sampling the packed student through the Pallas HiF4 kernels (interpret mode on a CPU) -> OUT/
with side-by-side mp4s (teacher 40 steps | student 4 | HiF4 student 4, same prompts and seeds),
a contact sheet and report.md, whose numbers all come from this run (same seed, same numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from configs import toy
from train import calibrate, dmd
from train.toy import metrics
from train.toy.data import eval_prompts
from train.toy.sample import sample_videos, teacher_config
from train.toy.teacher import load_teacher
from wanjax.argtypes import at_least, positive_int
from wanjax.io import checkpoint
from wanjax.io.video import to_uint8, write_mp4
from wanjax.pipeline import student_sample_config

SHOW = ("a red circle moving left", "a green square moving right", "a blue triangle moving up",
        "a yellow bar moving down", "a blue circle moving down", "a red bar moving right")
COLUMNS = ("teacher, 40 steps", "DMD student, 4 steps", "HiF4 student, 4 steps")
TABLE = ("prompt_acc", "attr_acc", "real_rate", "on_mode", "mode_tv", "fd", "swd", "diversity")


class Stages:
    """Numbered progress lines and the wall time of every stage."""

    def __init__(self, total: int):
        self.total, self.done, self.seconds = total, 0, {}

    def run(self, name: str, fn, *args, **kwargs):
        self.done += 1
        print(f"[{self.done}/{self.total}] {name}", flush=True)
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - t0
        print(f"      done in {self.seconds[name]:.0f} s", flush=True)
        return result


def side_by_side(videos: list[np.ndarray], gap: int = 1) -> np.ndarray:
    """Concatenates [3, F, H, W] videos along the width with a white gap."""
    parts = []
    for v in videos:
        parts += [v, np.ones((*v.shape[:3], gap), v.dtype)]
    return np.concatenate(parts[:-1], axis=-1)


def contact_sheet(rows: list[list[np.ndarray]], labels: list[str], scale: int = 6,
                  gap: int = 4, group_gap: int = 16) -> np.ndarray:
    """uint8 image: one row per prompt; per model (labelled on top) its frames left to right."""
    from PIL import Image, ImageDraw

    def strip(video):  # [3, F, H, W] -> frames side by side
        frames = to_uint8(video, scale)
        sep = np.full((frames.shape[1], gap, 3), 64, np.uint8)
        return np.concatenate([x for f in frames for x in (f, sep)][:-1], axis=1)

    lines = []
    for videos in rows:
        parts = [strip(v) for v in videos]
        sep = np.full((parts[0].shape[0], group_gap, 3), 255, np.uint8)
        lines.append(np.concatenate([x for p in parts for x in (p, sep)][:-1], axis=1))
        lines.append(np.full((gap, lines[-1].shape[1], 3), 255, np.uint8))
    body = np.concatenate(lines[:-1], axis=0)
    header = Image.new("RGB", (body.shape[1], 18), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    width = parts[0].shape[1] + group_gap
    for i, label in enumerate(labels):
        draw.text((i * width + 2, 3), label, fill=(0, 0, 0))
    return np.concatenate([np.asarray(header), body], axis=0)


def distil(out: Path, teacher: str, iterations: int, seed: int, quiet: bool) -> Path:
    argv = ["--teacher", teacher, "--out", str(out), "--iterations", str(iterations),
            "--seed", str(seed), "--no-resume"] + (["--quiet"] if quiet else [])
    return dmd.run(dmd._parser().parse_args(argv))


def quantize(student: Path, out: Path, seed: int) -> Path:
    """HiF4 W4A4 with the calibrate command's defaults (student trajectory, per expert)."""
    return calibrate.run(calibrate._parser().parse_args(
        ["--student", str(student), "--out", str(out), "--overwrite",
         "--calib-seed", str(1234 + seed)]))


def kernel_student(path: Path):
    """The packed HiF4 student on the Pallas kernels: the TPU kernel in interpret mode off-TPU."""
    from train.calibration.manifest import load_quantized_student
    from wanjax.quant.packed_model import set_kernel_backend

    model, cfg, manifest = load_quantized_student(path, "kernel")
    backend = jax.default_backend()
    if backend not in ("tpu", "gpu"):
        for expert in (model.high, model.low):
            set_kernel_backend(expert, "tpu", interpret=True)
    path_name = "Pallas TPU kernel, interpret mode" if backend not in ("tpu", "gpu") else \
        f"Pallas {backend.upper()} kernel"
    return model, cfg, manifest, path_name


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/demo", help="output folder (%(default)s)")
    p.add_argument("--teacher", default=toy.TEACHER_PATH, help="toy teacher (%(default)s)")
    p.add_argument("--iterations", type=positive_int, default=300,
                   help="DMD critic iterations per stage (%(default)s)")
    p.add_argument("--per-prompt", type=at_least(2), default=4,
                   help="evaluation samples per prompt, x64 prompts (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of training and sampling (%(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    try:
        teacher = load_teacher(args.teacher)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(6)
    start = time.perf_counter()
    try:
        student_path = stages.run("distil the 4-step student (train.dmd)", distil,
                                  out / "dmd", args.teacher, args.iterations, args.seed,
                                  args.quiet)
        quant_path = stages.run("calibrate HiF4 W4A4 on its trajectory (train.calibrate)",
                                quantize, student_path, out / "hif4", args.seed)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    student = load_teacher(student_path)
    student_cfg = student_sample_config(checkpoint.read_manifest(student_path))
    hif4, hif4_cfg, manifest, kernel_path = kernel_student(quant_path)
    samplers = {
        COLUMNS[0]: lambda ps: sample_videos(teacher, ps, teacher_config(40), seed=args.seed,
                                             progress=not args.quiet),
        COLUMNS[1]: lambda ps: sample_videos(student, ps, student_cfg, seed=args.seed,
                                             progress=not args.quiet),
        COLUMNS[2]: lambda ps: sample_videos(hif4, ps, hif4_cfg, seed=args.seed,
                                             progress=not args.quiet),
    }
    prompts = eval_prompts(args.per_prompt)
    show = list(SHOW)
    shown = [prompts.index(p) for p in show]  # their first evaluation sample: same noise for all

    def sample_all():
        return {name: fn(prompts) for name, fn in samplers.items()}

    videos = stages.run(f"sample {len(prompts)} videos per model (HiF4 through the "
                        f"{kernel_path})", sample_all)
    rows = stages.run("score them (train.toy.metrics)", lambda: {
        "real data (floor)": metrics.real_floor(prompts),
        **{name: metrics.evaluate_samples(v, prompts) for name, v in videos.items()}})
    stages.run("write videos and the contact sheet", _write_media, out, show,
               [videos[name][shown] for name in COLUMNS])
    report = stages.run("write the report", _report, out, args, rows, stages.seconds,
                        manifest, kernel_path, len(prompts), student_path, quant_path)
    total = time.perf_counter() - start
    print(report)
    print(f"\nfinished in {total:.0f} s. Outputs in {out}/:\n"
          f"  report.md, report.json      metrics of all three models (and real data)\n"
          f"  contact_sheet.png           {len(show)} prompts: {' | '.join(COLUMNS)}\n"
          f"  videos/*.mp4                the same, as side-by-side videos\n"
          f"  dmd/student, hif4/          the DMD student and its packed HiF4 version "
          f"(python -m train.calibrate, load_quantized_student)")
    return 0


def _write_media(out: Path, show: list[str], columns: list[np.ndarray]) -> None:
    import imageio.v3 as iio

    per_prompt = [[c[i] for c in columns] for i in range(len(show))]
    for i, (prompt, videos) in enumerate(zip(show, per_prompt, strict=True)):
        write_mp4(out / "videos" / f"{i:02d}_{prompt.replace(' ', '_')}.mp4",
                  side_by_side(videos), fps=3, scale=8)
    iio.imwrite(out / "contact_sheet.png", contact_sheet(per_prompt, list(COLUMNS)))


def _report(out: Path, args, rows: dict, seconds: dict, manifest, kernel_path: str,
            num_samples: int, student_path: Path, quant_path: Path) -> str:
    protected = "; ".join(f"{e}: {', '.join(p) or 'none'}" for e, p in manifest.protected().items())
    layers = sum(len(r.get("layers", {})) for r in manifest.experts.values())
    fp, q = rows[COLUMNS[1]], rows[COLUMNS[2]]
    text = "\n".join([
        "# wanjax demo: toy world, teacher vs DMD student vs HiF4 student", "",
        f"Videos and contact sheet, left to right: {' | '.join(COLUMNS)} (same prompts, same "
        "noise). The HiF4 student runs on packed 4.5-bit weights through the "
        f"{kernel_path}.", "",
        f"Metrics on {num_samples} samples ({args.per_prompt} per prompt, seed {args.seed}); "
        "distances against held-out real renders (lower is better), accuracies from the toy "
        "classifier (train/toy/README.md).", "",
        metrics.format_table(rows, TABLE), "",
        f"HiF4 vs FP student: prompt accuracy {q['prompt_acc']:.3f} vs {fp['prompt_acc']:.3f}, "
        f"FD {q['fd']:.1f} vs {fp['fd']:.1f}.", "",
        "## Settings", "",
        f"- teacher: `{args.teacher}`; DMD: {args.iterations} critic iterations per phased stage "
        f"(configs/dmd_toy.py otherwise), student `{student_path}`",
        f"- HiF4 W4A4 ({manifest.options['algorithm']}, {layers} block linears, groups of 64), "
        f"per expert on the student's trajectory; protected blocks {protected}; `{quant_path}`",
        "", "## Wall time (s)", "", *[f"- {k}: {v:.0f}" for k, v in seconds.items()], "",
    ])
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps(
        {"rows": rows, "seconds": seconds, "seed": args.seed, "iterations": args.iterations,
         "per_prompt": args.per_prompt, "kernel_path": kernel_path}, indent=2))
    return text


if __name__ == "__main__":
    sys.exit(main())
