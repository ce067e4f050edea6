"""The calibration flow for a dual-expert student (what `python -m train.calibrate` runs).

1. Statistics on the student's deployment trajectory (`stats.collect_stats`), per expert.
2. Per expert: the sensitivity sweep picks the protected blocks (or the given list), then every
   other in-scope linear is smoothed / GPTQ'd and frozen (`layers.calibrate_layers`).
3. Sequential experts: the high-noise expert is calibrated and frozen first; the low-noise
   expert's statistics are then collected on the trajectory the *quantized* high expert produces.
   (With `stats='joint'` or `trajectory='teacher'` both experts' statistics come from one pass.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from flax import nnx

from train.calibration import sensitivity
from train.calibration.data import Batch
from train.calibration.layers import LayerOptions, calibrate_layers
from train.calibration.stats import CollectOptions, ExpertStats, collect_stats
from train.calibration.trajectory import EXPERTS, guidance
from wanjax.models.dit import WanDiT
from wanjax.sampling.loop import SampleConfig

TRAJECTORIES = ("student", "teacher")
STATS_MODES = ("per-expert", "joint")


@dataclasses.dataclass(frozen=True)
class CalibrationOptions:
    fmt: str = "hif4"
    algorithm: str = "smooth+gptq"
    trajectory: str = "student"
    stats: str = "per-expert"
    protect: str | tuple[str, ...] = "auto"
    protect_k: int = 1
    include: tuple[str, ...] = ("blocks.*",)
    exclude: tuple[str, ...] = ()
    samples_per_call: int = 256
    max_samples: int = 1024
    sensitivity_inputs: int = 16
    percdamp: float = 0.01
    fold: bool = True

    def __post_init__(self):
        if self.trajectory not in TRAJECTORIES:
            raise ValueError(f"trajectory must be one of {TRAJECTORIES}, got {self.trajectory!r}")
        if self.stats not in STATS_MODES:
            raise ValueError(f"stats must be one of {STATS_MODES}, got {self.stats!r}")
        if self.protect_k < 0:
            raise ValueError(f"protect_k must be >= 0, got {self.protect_k}")
        self.layer_options()  # validates format and algorithm

    def layer_options(self) -> LayerOptions:
        from wanjax.quant import formats

        formats.get_format(self.fmt)
        return LayerOptions(fmt=self.fmt, algorithm=self.algorithm, fold=self.fold,
                            percdamp=self.percdamp, max_samples=self.max_samples)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict) -> CalibrationOptions:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
        return cls(**kw)


def _collect(experts, cfg, batches: Sequence[Batch], record, mode, teacher, teacher_cfg,
             copts) -> dict[str, ExpertStats]:
    total: dict[str, ExpertStats] | None = None
    for b in batches:
        out, _ = collect_stats(experts, cfg, b.noise, b.context, b.negative, b.key, record=record,
                               stats_mode=mode, teacher=teacher, teacher_cfg=teacher_cfg,
                               opts=copts)
        if total is None:
            total = out
        else:
            for e in out:
                total[e].merge(out[e])
    return total


def calibrate_expert(module: WanDiT, stats: ExpertStats, cfg: SampleConfig,
                     opts: CalibrationOptions, expert: str) -> dict:
    """Protect, then quantize `module` in place; returns its report."""
    sweep = base = None
    if opts.protect == "auto":
        base, sweep = sensitivity.sensitivity_sweep(
            module, stats.inputs, guidance(cfg, expert), opts.fmt, opts.include, opts.exclude,
            opts.sensitivity_inputs)
    protected = sensitivity.choose_protected(opts.protect, opts.protect_k, sweep)
    exclude = opts.exclude + sensitivity.protect_patterns(protected)
    layers = calibrate_layers(module, stats, opts.layer_options(), opts.include, exclude)
    return {
        "protected": protected,
        "sensitivity": None if sweep is None else {"all_quantized": base, "keep_fp": sweep},
        "steps": sorted(set(stats.steps)),
        "timesteps": sorted(set(float(t) for t in stats.timesteps), reverse=True),
        "step_absmax": _step_absmax(stats),
        "layers": layers,
    }


def calibrate(
    student: dict[str, WanDiT],
    cfg: SampleConfig,
    batches: Sequence[Batch],
    opts: CalibrationOptions = CalibrationOptions(),  # noqa: B008
    *,
    teacher: dict[str, WanDiT] | None = None,
    teacher_cfg: SampleConfig | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, WanDiT], dict]:
    """Quantized copies of the student's experts (the inputs are untouched) and the report."""
    if opts.trajectory == "teacher" and (teacher is None or teacher_cfg is None):
        raise ValueError("trajectory='teacher' needs the teacher's experts and sample config")
    quant = {e: nnx.clone(student[e]) for e in EXPERTS}
    copts = CollectOptions(include=opts.include, exclude=opts.exclude,
                           samples_per_call=opts.samples_per_call, xtx="gptq" in opts.algorithm)
    drive_teacher = teacher if opts.trajectory == "teacher" else None
    report = {"experts": {}}
    if opts.trajectory == "student" and opts.stats == "per-expert":
        for e in EXPERTS:  # sequential: high first, frozen, then low on its trajectory
            log(f"[calibrate] collecting {e}-noise statistics on the student trajectory")
            stats = _collect(quant, cfg, batches, (e,), "per-expert", None, None, copts)[e]
            if not stats.steps:
                log(f"[calibrate] the {e}-noise expert serves no step of this grid: kept as is")
                report["experts"][e] = _unused_expert()
                continue
            log(f"[calibrate] calibrating the {e}-noise expert ({len(set(stats.steps))} steps)")
            report["experts"][e] = calibrate_expert(quant[e], stats, cfg, opts, e)
    else:
        log(f"[calibrate] collecting statistics ({opts.trajectory} trajectory, {opts.stats})")
        all_stats = _collect(quant, cfg, batches, EXPERTS, opts.stats, drive_teacher,
                             teacher_cfg, copts)
        for e in EXPERTS:
            if not all_stats[e].steps:
                log(f"[calibrate] the {e}-noise expert serves no step of this grid: kept as is")
                report["experts"][e] = _unused_expert()
                continue
            log(f"[calibrate] calibrating the {e}-noise expert")
            report["experts"][e] = calibrate_expert(quant[e], all_stats[e], cfg, opts, e)
    if not any(r["layers"] for r in report["experts"].values()):
        raise ValueError("neither expert serves a step of the calibration grid; nothing to "
                         "calibrate")
    for e, r in report["experts"].items():
        finals = [v["final"] for v in r["layers"].values()]
        if not finals:
            continue
        log(f"[calibrate] {e}: protected {r['protected'] or 'none'}; {len(finals)} layers, "
            f"median W4A4 output error {np.median(finals):.4f}, worst {max(finals):.4f}")
    report["options"] = opts.to_json()
    return quant, report


def _step_absmax(stats: ExpertStats) -> dict[str, float]:
    """Per recorded step: the median over layers of the largest input |x| (how the activation
    range moves along the trajectory)."""
    steps = sorted({s for layer in stats.layers.values() for s in layer.per_step})
    return {str(s): float(np.median([float(layer.per_step[s].absmax.max())
                                     for layer in stats.layers.values() if s in layer.per_step]))
            for s in steps}


def _unused_expert() -> dict:
    """The report of an expert that no step of the deployment grid routes to (e.g. the low-noise
    expert of a 1-step student): it is never run, so it stays in full precision, unquantized."""
    return {"protected": [], "sensitivity": None, "steps": [], "timesteps": [],
            "step_absmax": {}, "layers": {}, "unused": True}
