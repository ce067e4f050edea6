"""Comparing a quantized student with its full-precision self and with the teacher.

`rollout` samples a model on evaluation batches step by step (`trajectory.run_trajectory`, the
loop's own transitions) and keeps every step's input and velocity. `compare` then scores a
quantized run against the FP run with the same seeds:

- per step: velocity cosine and relative error on the *same* input (the FP trajectory's state
  x_i, "forced": the model error of that step alone) and along the quantized model's own
  trajectory ("free": what sampling actually sees, errors accumulated);
- final latent relative error; PSNR / SSIM of the decoded frames against the FP sample;
  consecutive-frame SSIM (temporal consistency) of both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from train.calibration import metrics
from train.calibration.data import Batch
from train.calibration.trajectory import ExpertRunner, run_trajectory
from wanjax.models.dit import WanDiT
from wanjax.sampling.loop import SampleConfig


@dataclasses.dataclass
class Run:
    timesteps: np.ndarray
    experts: list[str]
    xs: list[np.ndarray]  # per step [S, ...]
    vs: list[np.ndarray]
    final: np.ndarray


def rollout(experts: dict[str, WanDiT], cfg: SampleConfig, batches: Sequence[Batch],
            keep: bool = True) -> Run:
    runner = ExpertRunner(experts, cfg)
    parts = []
    for b in batches:
        runner.bind(b.context, b.negative)
        parts.append(run_trajectory(runner, cfg, b.noise, b.key, keep=keep))
    first = parts[0]
    n = len(first.timesteps)
    cat = lambda arrs: np.concatenate([np.asarray(a) for a in arrs], axis=0)  # noqa: E731
    xs = [cat([p.xs[i] for p in parts]) for i in range(n)] if keep else []
    vs = [cat([p.vs[i] for p in parts]) for i in range(n)] if keep else []
    return Run(first.timesteps, first.experts, xs, vs, cat([p.final for p in parts]))


def forced_velocities(experts: dict[str, WanDiT], cfg: SampleConfig, batches: Sequence[Batch],
                      reference: Run) -> list[np.ndarray]:
    """The model's velocity at every step on the reference run's states."""
    runner = ExpertRunner(experts, cfg)
    out = [[] for _ in reference.timesteps]
    start = 0
    for b in batches:
        runner.bind(b.context, b.negative)
        n = len(b.prompts)
        for i, (t, e) in enumerate(zip(reference.timesteps, reference.experts, strict=True)):
            out[i].append(np.asarray(runner.velocity(e, reference.xs[i][start:start + n],
                                                     float(t))))
        start += n
    return [np.concatenate(v, axis=0) for v in out]


def frames(latents: np.ndarray, toy: bool) -> tuple[np.ndarray, float]:
    """What the viewer sees and its data range: toy latents are the video in [-1, 1]."""
    if toy:
        return np.clip(latents, -1.0, 1.0), 2.0
    return latents, float(np.max(latents) - np.min(latents)) or 1.0


def compare(quant: Run, forced: list[np.ndarray], fp: Run, toy: bool,
            teacher_final: np.ndarray | None = None) -> dict:
    steps = []
    for i, (t, e) in enumerate(zip(fp.timesteps, fp.experts, strict=True)):
        cos = metrics.cosine(forced[i], fp.vs[i])
        rel = metrics.relative_error(forced[i], fp.vs[i])
        fcos = metrics.cosine(quant.vs[i], fp.vs[i])
        frel = metrics.relative_error(quant.vs[i], fp.vs[i])
        steps.append({"step": i, "expert": e, "t": float(t), "cos": float(cos.mean()),
                      "cos_min": float(cos.min()), "rel": float(rel.mean()),
                      "free_cos": float(fcos.mean()), "free_rel": float(frel.mean())})
    per_expert = {}
    for e in ("high", "low"):
        mine = [s for s in steps if s["expert"] == e]
        if mine:
            per_expert[e] = {"cos": float(np.mean([s["cos"] for s in mine])),
                             "cos_min": float(min(s["cos_min"] for s in mine)),
                             "rel": float(np.mean([s["rel"] for s in mine])),
                             "free_rel": float(np.mean([s["free_rel"] for s in mine]))}
    fq, rng = frames(quant.final, toy)
    ff, _ = frames(fp.final, toy)
    out = {
        "steps": steps,
        "per_expert": per_expert,
        "min_step_cos": float(min(s["cos"] for s in steps)),
        "worst_sample_cos": float(min(s["cos_min"] for s in steps)),
        "mean_step_rel": float(np.mean([s["rel"] for s in steps])),
        "final_rel": float(metrics.relative_error(quant.final, fp.final).mean()),
        "psnr_vs_fp": float(np.mean(np.minimum(metrics.psnr(fq, ff, rng), 100.0))),
        "ssim_vs_fp": float(metrics.ssim(fq, ff, rng).mean()),
    }
    if fq.ndim == 5 and fq.shape[2] > 1:
        out["temporal_ssim"] = float(metrics.temporal_ssim(fq, rng).mean())
    if teacher_final is not None:
        out.update(_vs_teacher(fq, rng, quant.final, teacher_final, toy))
    return out


def _vs_teacher(f: np.ndarray, rng, final: np.ndarray, teacher_final: np.ndarray,
                toy: bool) -> dict:
    """PSNR / SSIM of frames `f` and relative error of latent `final` against the teacher's."""
    ft, _ = frames(teacher_final, toy)
    return {"psnr_vs_teacher": float(np.mean(np.minimum(metrics.psnr(f, ft, rng), 100.0))),
            "ssim_vs_teacher": float(metrics.ssim(f, ft, rng).mean()),
            "final_rel_vs_teacher": float(metrics.relative_error(final, teacher_final).mean())}


def self_row(run: Run, toy: bool, teacher_final: np.ndarray | None = None) -> dict:
    """The reference columns of an FP run (vs the teacher, temporal consistency)."""
    f, rng = frames(run.final, toy)
    out = {}
    if f.ndim == 5 and f.shape[2] > 1:
        out["temporal_ssim"] = float(metrics.temporal_ssim(f, rng).mean())
    if teacher_final is not None:
        out.update(_vs_teacher(f, rng, run.final, teacher_final, toy))
    return out
