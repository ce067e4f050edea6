"""The toy-world metric table: real data (the floor) and the teacher at 40 and at 1, 2, 4 steps.

    python -m train.toy.evaluate --per-prompt 16 --preview outputs/toy_preview

Every row samples the same prompt set (each of the 64 prompts `--per-prompt` times) and is scored
by `train.toy.metrics.evaluate_samples` against held-out real renders of those prompts, once on
the raw samples and once clipped to [-1, 1] (what the pipeline and the video writers output).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from configs import toy
from train.toy import metrics, world
from train.toy.data import eval_prompts
from train.toy.sample import sample_videos, teacher_config
from train.toy.teacher import load_teacher

FEW_STEP_SOLVERS = ("euler", "x0_renoise")


def video_grid(videos: np.ndarray, scale: int = 4, gap: int = 2) -> np.ndarray:
    """uint8 image: one row per video, its frames left to right."""
    rows = []
    for video in videos:
        frames = world.to_uint8_frames(video, scale)
        pad = np.full((frames.shape[1], gap, 3), 96, np.uint8)
        rows.append(np.concatenate([x for f in frames for x in (f, pad)], axis=1))
        rows.append(np.full((gap, rows[-1].shape[1], 3), 96, np.uint8))
    return np.concatenate(rows, axis=0)


def teacher_rows(
    teacher, prompts: list[str], steps: int, few_steps: list[int], solvers: list[str], seed: int
) -> dict[str, np.ndarray]:
    """`name -> samples` for the 40-step teacher and each few-step baseline."""
    runs = {f"teacher unipc-{steps}": teacher_config(steps, "unipc")}
    for n in few_steps:
        for solver in solvers:
            runs[f"teacher {solver}-{n}"] = teacher_config(n, solver)
    out = {}
    for name, cfg in runs.items():
        start = time.time()
        out[name] = sample_videos(teacher, prompts, cfg, seed=seed, progress=True)
        print(f"{name}: sampled {len(prompts)} videos in {time.time() - start:.0f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.toy.evaluate",
        description="Score the toy teacher (40-step CFG and few-step baselines) and a second "
        "real draw with the toy-world metrics; prints a Markdown table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--teacher", default=toy.TEACHER_PATH, help="teacher checkpoint folder")
    parser.add_argument("--per-prompt", type=int, default=16, help="samples per prompt (x64)")
    parser.add_argument("--steps", type=int, default=toy.TEACHER_STEPS, help="UniPC steps")
    parser.add_argument("--few-steps", type=int, nargs="*", default=sorted(toy.FEW_STEP_TIMESTEPS),
                        help=f"few-step baselines, each in {sorted(toy.FEW_STEP_TIMESTEPS)}")
    parser.add_argument("--solvers", nargs="*", default=list(FEW_STEP_SOLVERS),
                        choices=FEW_STEP_SOLVERS, help="few-step solvers")
    parser.add_argument("--seed", type=int, default=0, help="sampling noise seed")
    parser.add_argument("--preview", default=None, help="folder for PNG grids of the samples")
    args = parser.parse_args(argv)
    if args.per_prompt < 2:
        parser.error("--per-prompt must be >= 2 (diversity compares samples of a prompt)")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    bad = sorted(set(args.few_steps) - set(toy.FEW_STEP_TIMESTEPS))
    if bad:
        parser.error(f"--few-steps {bad}: grids exist for {sorted(toy.FEW_STEP_TIMESTEPS)}")
    try:
        teacher = load_teacher(args.teacher)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))

    prompts = eval_prompts(args.per_prompt)
    samples = {"real (2nd draw)": metrics.real_videos(prompts, split="reference")}
    samples |= teacher_rows(teacher, prompts, args.steps, args.few_steps, args.solvers, args.seed)
    reference = metrics.real_videos(prompts)  # held-out renders: rendered once, not per row
    for scoring in metrics.SCORINGS:
        rows = {name: metrics.evaluate_samples(metrics.scored_as(scoring, v), prompts,
                                               reference=reference)
                for name, v in samples.items()}
        print(f"\n{scoring} samples:\n\n{metrics.format_table(rows)}")
    if args.preview:
        import imageio.v2 as imageio

        out = Path(args.preview)
        out.mkdir(parents=True, exist_ok=True)
        pick = np.arange(0, len(prompts), args.per_prompt)[::4]  # 16 prompts, first sample
        for name, videos in samples.items():
            imageio.imwrite(out / (re.sub(r"[^\w.-]+", "_", name).strip("_") + ".png"),
                            video_grid(videos[pick]))
        print(f"previews in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
