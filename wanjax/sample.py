"""`python -m wanjax.sample`: prompt(s) to mp4 with a converted Wan2.2 checkpoint or a student.

Defaults are the official A14B settings (UniPC, 40 steps, shift 12, guidance 4.0 high / 3.0
low, the official negative prompt, 1280*720, 81 frames, 16 fps). A DMD student checkpoint brings
its own few-step settings (timesteps, 'x0_renoise', no CFG), which flags can still override; a
calibrated student (`python -m train.calibrate`) runs its packed HiF4 layers on the HiF4 kernels.
Without --checkpoint it samples the built-in toy-world teacher (seconds on a CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

from wanjax.argtypes import positive_int
from wanjax.io.video import write_mp4, write_sidecar
from wanjax.pipeline import SIZES, load_pipeline, parse_size
from wanjax.sampling.loop import SampleConfig
from wanjax.sampling.solvers import SOLVERS

TOY_TEACHER = "train/toy/assets/teacher"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wanjax.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = "(default: %(default)s)"
    p.add_argument("--checkpoint", default=TOY_TEACHER,
                   help="converted checkpoint, DMD student, calibrated HiF4 student (train.calibrate) "
                        f"or toy checkpoint {d}")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    src.add_argument("--prompts-file", help="one prompt per line")
    p.add_argument("--negative-prompt", default=None,
                   help="negative prompt (default: the official Wan2.2 one; toy: empty)")
    p.add_argument("--size", default="1280*720",
                   help=f"W*H, divisible by 16, or one of {sorted(SIZES)} {d}")
    p.add_argument("--frames", type=int, default=81, help=f"4n+1 frames {d}")
    p.add_argument("--steps", type=positive_int,
                   help="sampling steps (default: 40, or the student's)")
    p.add_argument("--shift", type=float, help="flow shift (default: 12, or the student's)")
    p.add_argument("--guide-high", type=float, help="guidance of the high-noise expert (4.0)")
    p.add_argument("--guide-low", type=float, help="guidance of the low-noise expert (3.0)")
    p.add_argument("--solver", choices=sorted(SOLVERS), help="solver (unipc, or the student's)")
    p.add_argument("--timesteps", help="few-step raw timesteps, e.g. 1000,750,500,250")
    p.add_argument("--cfg", choices=("batched", "two_pass"), default="batched",
                   help=f"CFG as one batch of 2 or two passes (less memory) {d}")
    p.add_argument("--offload", choices=("none", "swap"), default="none",
                   help=f"swap: only the active expert on the accelerator {d}")
    p.add_argument("--seed", type=int, default=0, help=f"noise seed {d}")
    p.add_argument("--batch-size", type=positive_int, default=1, help=f"prompts per batch {d}")
    p.add_argument("--fps", type=positive_int, default=16, help=f"mp4 frame rate {d}")
    p.add_argument("--scale", type=positive_int, default=1, help=f"nearest upscaling of frames {d}")
    p.add_argument("--out", default="outputs/samples", help=f"output folder {d}")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None,
                   help="parameter/compute dtype (default: as stored)")
    return p


def sample_config(args, default: SampleConfig) -> SampleConfig:
    changes = {}
    if args.timesteps:
        try:
            changes["timesteps"] = tuple(float(t) for t in args.timesteps.split(","))
        except ValueError:
            raise ValueError(f"--timesteps must be numbers, got {args.timesteps!r}") from None
    elif args.steps is not None:
        changes.update(timesteps=None, num_steps=args.steps)
        if default.timesteps is not None and args.solver is None:
            changes["solver"] = "unipc"
        changes["phased"] = False
    for field, value in (("shift", args.shift), ("guide_high", args.guide_high),
                         ("guide_low", args.guide_low), ("solver", args.solver)):
        if value is not None:
            changes[field] = value
    changes["cfg_mode"] = args.cfg
    return dataclasses.replace(default, **changes)


def _slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:n] or "prompt"


def run(args) -> list[Path]:
    if args.frames < 1 or (args.frames - 1) % 4:
        raise ValueError(f"--frames must be 4n+1 (1, 5, ..., 81), got {args.frames}")
    width, height = parse_size(args.size)
    if width % 16 or height % 16:
        raise ValueError(f"--size {width}*{height}: width and height must be divisible by 16")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    if not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} not found")
    if args.prompts_file:
        prompts = [p.strip() for p in Path(args.prompts_file).read_text().splitlines() if p.strip()]
    else:
        prompts = args.prompt or []
    pipe = load_pipeline(args.checkpoint, args.dtype)
    if not prompts:
        prompts = ["a red circle moving left"] if pipe.world == "toy" else []
    if not prompts:
        raise ValueError("give --prompt or --prompts-file")
    cfg = sample_config(args, pipe.default_sampling)
    if args.negative_prompt is not None:
        negative = args.negative_prompt
    elif pipe.world == "toy":
        negative = ""
    else:
        from wanjax.text.prompts import SAMPLE_NEG_PROMPT

        negative = SAMPLE_NEG_PROMPT
    out = Path(args.out)
    written = []
    for start in tqdm(range(0, len(prompts), args.batch_size), desc="sampling", unit="batch"):
        batch = prompts[start:start + args.batch_size]
        t0 = time.perf_counter()
        result = pipe.generate(batch, negative, cfg, args.seed + start, args.frames, height, width,
                               args.offload)
        seconds = time.perf_counter() - t0
        for i, prompt in enumerate(batch):
            path = out / f"{start + i:03d}_{_slug(prompt)}.mp4"
            scale = args.scale if pipe.world == "wan" else max(args.scale, 8)
            write_mp4(path, result["video"][i], fps=args.fps if pipe.world == "wan" else 4,
                      scale=scale)
            write_sidecar(path, {"prompt": prompt, "negative_prompt": negative,
                                 "seed": args.seed + start, "index_in_batch": i,
                                 "checkpoint": str(args.checkpoint), "world": pipe.world,
                                 "sample_config": dataclasses.asdict(cfg),
                                 "size": f"{width}*{height}", "frames": args.frames,
                                 "seconds_for_batch": seconds, "offload": args.offload})
            written.append(path)
    return written


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        paths = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} video(s) to {Path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
