"""Per-layer input statistics of a dual-expert student on a sampling trajectory.

Interception: each selected `Linear` is temporarily wrapped by a `RecordingLinear`, which returns
the wrapped layer's output unchanged and writes what it saw into `CalibStat` variables: per input
channel max |x| and sum |x|, the token count, `X^T X` (for GPTQ) and a few token rows (for the
smoothing search and per-layer errors). The expert's forward runs under `jit` with zeroed stats
and hands them back with the velocity; the host then files them under (expert, step, layer path).

Routing follows inference exactly (`trajectory.run_trajectory`): step i belongs to the expert
`make_phase` gives it, and only that expert records it (`per-expert`). With `joint`, both experts
are run on every step's input and record it (the driving velocity is still the routed one's), as
if one model served the whole trajectory. `trajectory='teacher'` drives the states with the
teacher's long CFG trajectory instead and runs the student's routed expert on them.

Memory: channel statistics are kept per step; `X^T X` is summed per expert over its steps
(`in^2` floats per layer), and token rows are capped per layer (`max_samples`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from train.calibration.trajectory import (
    ExpertRunner,
    Trajectory,
    guidance,
    pad_context,
    run_trajectory,
)
from wanjax.models.dit import WanDiT
from wanjax.models.layers import Linear
from wanjax.quant.rules import _child, _replace_child, path_str
from wanjax.sampling.loop import SampleConfig, guided_velocity

DEFAULT_SCOPE = ("blocks.*",)


class CalibStat(nnx.Variable):
    """A calibration statistic (not a parameter)."""


class RecordingLinear(nnx.Module):
    """Wraps a `Linear`: same output, and records its input (see the module docstring)."""

    def __init__(self, inner: nnx.Module, path: str, samples_per_call: int, xtx: bool):
        self.inner = inner
        self.path = path
        k = inner.in_features
        self.in_features = k
        self.out_features = inner.out_features
        self.compute_dtype = inner.compute_dtype  # the model reads it (attention output dtype)
        self.samples_per_call = samples_per_call
        self.absmax = CalibStat(jnp.zeros((k,), jnp.float32))
        self.abssum = CalibStat(jnp.zeros((k,), jnp.float32))
        self.count = CalibStat(jnp.zeros((), jnp.float32))
        self.xtx = CalibStat(jnp.zeros((k, k), jnp.float32)) if xtx else nnx.data(None)
        self.samples = CalibStat(jnp.zeros((samples_per_call, k), jnp.float32))

    def __call__(self, x):
        rows = x.reshape(-1, self.in_features).astype(jnp.float32)
        mag = jnp.abs(rows)
        self.absmax[...] = jnp.maximum(self.absmax[...], jnp.max(mag, axis=0))
        self.abssum[...] = self.abssum[...] + jnp.sum(mag, axis=0)
        self.count[...] = self.count[...] + rows.shape[0]
        if self.xtx is not None:
            self.xtx[...] = self.xtx[...] + jnp.matmul(
                rows.T, rows, precision=jax.lax.Precision.HIGHEST)
        idx = np.linspace(0, rows.shape[0] - 1, self.samples_per_call).round().astype(np.int32)
        self.samples[...] = rows[idx]
        return self.inner(x)


def in_scope(path: str, include: Sequence[str], exclude: Sequence[str] = ()) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in include) and not any(
        fnmatch.fnmatchcase(path, p) for p in exclude)


def linear_paths(module: nnx.Module, include=DEFAULT_SCOPE, exclude=()) -> list[str]:
    """Dotted paths of the `Linear`s (any subclass) of `module` within the scope."""
    return [path_str(p) for p, n in nnx.iter_graph(module)
            if isinstance(n, Linear) and p and in_scope(path_str(p), include, exclude)]


def _walk(module, path: str):
    parent = module
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        parent = _child(parent, k)
    return parent, keys[-1]


def attach_recorders(module: nnx.Module, paths: Sequence[str], samples_per_call: int,
                     xtx: bool) -> dict:
    """Wrap the layers at `paths` in place; returns `path -> original layer` for `detach`."""
    originals = {}
    for path in paths:
        parent, key = _walk(module, path)
        layer = _child(parent, key)
        originals[path] = layer
        _replace_child(parent, key, RecordingLinear(layer, path, samples_per_call, xtx))
    return originals


def detach_recorders(module: nnx.Module, originals: dict) -> None:
    for path, layer in originals.items():
        parent, key = _walk(module, path)
        _replace_child(parent, key, layer)


@dataclasses.dataclass
class ChannelStats:
    absmax: np.ndarray
    abssum: np.ndarray
    count: float

    @property
    def mean_abs(self) -> np.ndarray:
        return self.abssum / max(self.count, 1.0)


@dataclasses.dataclass
class LayerStats:
    """One layer of one expert: totals over the steps it served, and per step."""

    absmax: np.ndarray
    abssum: np.ndarray
    count: float
    xtx: np.ndarray | None
    samples: list[np.ndarray]
    per_step: dict[int, ChannelStats]

    @property
    def mean_abs(self) -> np.ndarray:
        return self.abssum / max(self.count, 1.0)

    def sample_rows(self, max_rows: int | None = None) -> np.ndarray:
        rows = np.concatenate(self.samples, axis=0)
        if max_rows is not None and len(rows) > max_rows:
            rows = rows[np.linspace(0, len(rows) - 1, max_rows).round().astype(int)]
        return rows


@dataclasses.dataclass
class ExpertInputs:
    """What one expert was called with during collection (for the sensitivity sweep)."""

    x: list = dataclasses.field(default_factory=list)
    t: list[float] = dataclasses.field(default_factory=list)
    step: list[int] = dataclasses.field(default_factory=list)
    context: list = dataclasses.field(default_factory=list)
    negative: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ExpertStats:
    expert: str
    layers: dict[str, LayerStats]
    steps: list[int]  # steps (of the driving grid) recorded for this expert
    timesteps: list[float]
    inputs: ExpertInputs

    def merge(self, other: ExpertStats) -> None:
        """Pool another collection into this one (e.g. several prompt batches)."""
        for path, s in other.layers.items():
            if path not in self.layers:
                self.layers[path] = s
                continue
            mine = self.layers[path]
            mine.absmax = np.maximum(mine.absmax, s.absmax)
            mine.abssum = mine.abssum + s.abssum
            mine.count += s.count
            if mine.xtx is not None and s.xtx is not None:
                mine.xtx = mine.xtx + s.xtx
            mine.samples += s.samples
            for step, c in s.per_step.items():
                if step in mine.per_step:
                    p = mine.per_step[step]
                    mine.per_step[step] = ChannelStats(np.maximum(p.absmax, c.absmax),
                                                       p.abssum + c.abssum, p.count + c.count)
                else:
                    mine.per_step[step] = c
        self.steps = sorted(set(self.steps) | set(other.steps))
        for f in dataclasses.fields(ExpertInputs):
            getattr(self.inputs, f.name).extend(getattr(other.inputs, f.name))


@dataclasses.dataclass(frozen=True)
class CollectOptions:
    include: tuple[str, ...] = DEFAULT_SCOPE
    exclude: tuple[str, ...] = ()
    samples_per_call: int = 256
    xtx: bool = True
    keep_inputs: bool = True  # store each call's x (for the sensitivity sweep)


@functools.lru_cache(maxsize=32)
def _recording_jit(graphdef: nnx.GraphDef):
    """Jitted recording forward of one expert structure (one compile per graphdef)."""

    def fn(params, stats, x, t, context, negative, scale):
        model = nnx.merge(graphdef, stats, params)
        v = guided_velocity(lambda _, x_, t_, c_: model(x_, t_, c_), None, x, t, context,
                            negative, scale, "batched")
        return v, nnx.state(model, CalibStat)

    return jax.jit(fn, static_argnums=(6,))


class _Recorder:
    """Recording forward of one expert: `(v, stats)` from one jitted call."""

    def __init__(self, module: WanDiT, opts: CollectOptions):
        paths = linear_paths(module, opts.include, opts.exclude)
        self.paths = paths
        originals = attach_recorders(module, paths, opts.samples_per_call, opts.xtx)
        graphdef, params, stats = nnx.split(module, CalibStat, ...)
        detach_recorders(module, originals)
        self.zero = stats
        self.params = params
        self.fn = _recording_jit(graphdef)

    def __call__(self, x, t, context, negative, scale):
        neg = negative if scale != 1.0 else None
        v, stats = self.fn(self.params, self.zero, x, jnp.float32(t), context, neg, float(scale))
        flat = {path_str(p): np.asarray(jax.device_get(var.get_value()))
                for p, var in nnx.to_flat_state(stats)}
        return v, flat


def _file(store: dict[str, LayerStats], flat: dict, step: int, prefix_paths: Sequence[str]):
    for path in prefix_paths:
        absmax = flat[f"{path}.absmax"].astype(np.float64)
        abssum = flat[f"{path}.abssum"].astype(np.float64)
        count = float(flat[f"{path}.count"])
        xtx = flat.get(f"{path}.xtx")
        xtx = None if xtx is None else xtx.astype(np.float64)
        sample = flat[f"{path}.samples"]
        if path not in store:
            store[path] = LayerStats(absmax, abssum, count, xtx, [sample],
                                     {step: ChannelStats(absmax, abssum, count)})
            continue
        s = store[path]
        s.absmax = np.maximum(s.absmax, absmax)
        s.abssum = s.abssum + abssum
        s.count += count
        if xtx is not None:
            s.xtx = s.xtx + xtx
        s.samples.append(sample)
        prev = s.per_step.get(step)
        s.per_step[step] = ChannelStats(absmax, abssum, count) if prev is None else ChannelStats(
            np.maximum(prev.absmax, absmax), prev.abssum + abssum, prev.count + count)


def collect_stats(
    experts: dict[str, WanDiT],
    cfg: SampleConfig,
    noise,
    context,
    negative,
    key,
    *,
    record: Sequence[str] = ("high", "low"),
    stats_mode: str = "per-expert",
    teacher: dict[str, WanDiT] | None = None,
    teacher_cfg: SampleConfig | None = None,
    opts: CollectOptions = CollectOptions(),  # noqa: B008
) -> tuple[dict[str, ExpertStats], Trajectory]:
    """Statistics of the experts in `record`, tagged by (expert, step, layer).

    `experts` drive the student trajectory (their current state: a quantized high expert makes
    the low expert see deployment-like inputs). With `teacher` (+ `teacher_cfg`), the states come
    from the teacher's trajectory and the student's routed expert is run on them with the
    student's own guidance. `stats_mode`: 'per-expert' (only the routed expert records a step)
    or 'joint' (every recorded expert sees every step).
    """
    if stats_mode not in ("per-expert", "joint"):
        raise ValueError(f"stats_mode must be 'per-expert' or 'joint', got {stats_mode!r}")
    context, negative = pad_context(context, negative)
    recorders = {e: _Recorder(experts[e], opts) for e in record}
    out = {e: ExpertStats(e, {}, [], [], ExpertInputs()) for e in record}
    drive_cfg = teacher_cfg if teacher is not None else cfg
    boundary_t = cfg.boundary * 1000.0

    def student_expert(t: float, routed: str) -> str:
        # On the student's grid the step's own routing; on the teacher's grid the student's
        # boundary decides (the same rule, t >= boundary * 1000).
        if teacher is None:
            return routed
        return "high" if t >= boundary_t else "low"

    driver = ExpertRunner(teacher if teacher is not None else experts, drive_cfg)
    driver.bind(context, negative)

    def velocity(routed: str, step: int, x, t: float):
        owner = student_expert(t, routed)
        targets = [e for e in record if stats_mode == "joint" or e == owner]
        v_drive = None
        for e in targets:
            v, flat = recorders[e](x, t, context, negative, guidance(cfg, e))
            _file(out[e].layers, flat, step, recorders[e].paths)
            out[e].steps.append(step)
            out[e].timesteps.append(t)
            if opts.keep_inputs:
                out[e].inputs.x.append(x)
                out[e].inputs.t.append(t)
                out[e].inputs.step.append(step)
                out[e].inputs.context.append(context)
                out[e].inputs.negative.append(negative)
            if teacher is None and e == routed:
                v_drive = v
        if v_drive is None:
            v_drive = driver.velocity(routed, x, t)
        return v_drive

    traj = run_trajectory(velocity, drive_cfg, noise, key, keep=False)
    return out, traj
