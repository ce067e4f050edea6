"""`report.md` and `per_step_error.png` from the results of `python -m train.evaluate`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from train.calibration.plot import plot_panels

COS_GATE = 0.99
# Toy quality margins against the FP student (stated here, checked in the report).
QUALITY_MARGINS = {"prompt_acc": ("abs", 0.05), "attr_acc": ("abs", 0.05),
                   "fd": ("rel", 0.25), "swd": ("rel", 0.10)}
TIE = 0.02  # relative difference below which an ordering is called a tie

# (claim, better variant, worse variant)
ORDERINGS = (
    ("student-trajectory calibration beats teacher-trajectory", "main", "teacher-trajectory"),
    ("per-expert statistics beat joint statistics", "main", "joint-stats"),
    ("protecting the entrance block beats protecting nothing", "main", "unprotected"),
    ("HiF4 beats NVFP4-style", "main", "nvfp4"),
    ("HiF4 beats MXFP4-style", "main", "mxfp4"),
    ("HiF4 beats INT4", "main", "int4"),
)


DEFINITIONS = (
    "forced: the quantized expert evaluated on the FP student's state x_i at step i (that step's "
    "model error alone); free: along the quantized student's own trajectory (errors accumulate)",
    "cosine / relative error: per sample over the whole latent, then averaged over samples; "
    "'min cos' is the worst sample",
    "student trajectory: the few-step student sampled at N steps, each step routed to its expert "
    "as in inference; the high-noise expert is calibrated and frozen first, then the low-noise "
    "expert's statistics are collected on the trajectory of the quantized high expert",
    "teacher trajectory: the teacher's 40-step CFG sampler produces the states; the student's "
    "expert owning each teacher timestep (t >= boundary x 1000: high) is run on them (student "
    "guidance) and recorded; both experts from the FP pass",
    "joint statistics: both experts are run and recorded at every step of the student "
    "trajectory (as if one model served all steps), from one FP pass",
    "N != the trained step count: raw timesteps evenly spaced from 1000 (the trained 4-step grid "
    "is linspace(1000, 0, 5)[:-1]) through the same shift, solver and routing",
    "formats: HiF4 bit-exact to the reference; NVFP4-style = E4M3 scale per 16 without the "
    "per-tensor scale; MXFP4-style = the reference library's shared-exponent rule (not OCP); INT4 "
    "= absmax/7 per 64. All W4A4 along in_features with dynamic per-token activation groups",
    "toy world: the latents are the video (no VAE), so PSNR/SSIM are on the clipped samples in "
    "[-1, 1]; other worlds compare latents directly",
)


def _f(v, digits=4) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    return f"{v:.{digits}f}"


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |"
            for r in rows]
    return out


def _within(metric: str, value: float, ref: float) -> bool:
    kind, margin = QUALITY_MARGINS[metric]
    higher_better = metric.endswith("acc")
    if kind == "abs":
        return value >= ref - margin if higher_better else value <= ref + margin
    return value <= ref * (1 + margin) + 1e-12


def _repeats(a: dict, metric: str) -> np.ndarray:
    reps = a.get("repeats") or [a["compare"]]
    return np.array([r[metric] for r in reps], np.float64)


def ordering(results: dict, better: str, worse: str) -> dict | None:
    """Per metric (lower is better): the two means and a verdict. With several calibration sets
    the verdict uses the paired differences (same sets for both variants): 'holds' / 'reversed'
    when the mean difference exceeds twice its standard error, else 'tie'. With one set, 'tie'
    means a relative difference below TIE."""
    ab = results.get("ablations", {})
    if better not in ab or worse not in ab:
        return None
    out = {}
    for m in ("mean_step_rel", "final_rel"):
        vb, vw = _repeats(ab[better], m), _repeats(ab[worse], m)
        k = min(len(vb), len(vw))
        d = vw[:k] - vb[:k]
        if k > 1:
            sem = d.std(ddof=1) / np.sqrt(k)
            verdict = "tie" if abs(d.mean()) <= 2 * sem else (
                "holds" if d.mean() > 0 else "reversed")
        else:
            rel = d.mean() / max((abs(vb.mean()) + abs(vw.mean())) / 2, 1e-30)
            verdict = "tie" if abs(rel) < TIE else ("holds" if rel > 0 else "reversed")
        out[m] = (float(vb.mean()), float(vw.mean()), verdict)
    verdicts = {v[2] for v in out.values()}
    out["verdict"] = verdicts.pop() if len(verdicts) == 1 else "mixed"
    return out


def write_report(out: Path, results: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    backend = _plot(out / "per_step_error.png", results)
    s = results["setup"]
    name = {"hif4": "HiF4", "nvfp4": "NVFP4-style", "mxfp4": "MXFP4-style", "int4": "INT4"}.get(
        s["format"], s["format"])
    lines = [f"# {name} W4A4 student: calibration and evaluation", ""]
    lines += [f"- student: `{s['student']}` ({s['world']} world); teacher: "
              f"`{s.get('teacher') or 'none'}` ({s.get('teacher_steps')} steps)",
              f"- calibration: {s['algorithm']}, {s['trajectory']} trajectory, {s['stats']} "
              f"statistics, protect {s['protect']} (k={s['protect_k']}), {s['calib_prompts']} "
              f"prompts (seed {s['calib_seed']}; ablations over {s.get('repeats', 1)} calibration "
              f"sets); scope {s['include']}",
              f"- evaluation: {s['eval_samples']} samples (seed {s['seed']}), the same noise for "
              "every sampler; velocities compared on the FP trajectory's states ('forced') and "
              "along each model's own trajectory ('free')",
              f"- wall time {s.get('wall_seconds', 0):.0f} s", ""]
    lines += _acceptance(results)
    for n, r in results["steps"].items():
        lines += _steps_section(n, r, s)
    if results.get("quality"):
        lines += _quality(results)
    if results.get("ablations"):
        lines += _ablations(results)
    lines += _calibration_details(results)
    if results.get("saved"):
        sv = results["saved"]
        lines += ["## Saved quantized student", "",
                  f"`{sv['path']}` loaded with `load_quantized_student` ({sv['mode']} path), "
                  f"{sv['steps']} steps: final-latent rel. error vs FP {_f(sv['final_rel'])}, "
                  f"min per-step velocity cos vs FP {_f(sv['min_step_cos'], 5)}.", ""]
    lines += ["## Plot", "", f"![per-step error](per_step_error.png) (drawn with {backend})", ""]
    lines += ["## Definitions", ""] + [f"- {d}" for d in DEFINITIONS] + [""]
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _acceptance(results: dict) -> list[str]:
    lines = ["## Acceptance summary", ""]
    main_n = results["setup"]["deploy_steps"]
    r = results["steps"].get(str(main_n)) or results["steps"].get(main_n)
    if r:
        c = r["quant"]
        ok = c["min_step_cos"] >= COS_GATE
        lines.append(f"- {main_n} steps: min over steps of the mean per-step velocity cosine vs "
                     f"the FP student = {c['min_step_cos']:.5f} (gate {COS_GATE}: "
                     f"{'PASS' if ok else 'FAIL'}); worst single sample {c['worst_sample_cos']:.5f}")
    q = results.get("quality", {})
    fp, hq = q.get(f"FP-student({main_n})"), q.get(f"quant-student({main_n})")
    if fp and hq:
        parts, all_ok = [], True
        for m in QUALITY_MARGINS:
            ok = _within(m, hq[m], fp[m])
            all_ok &= ok
            kind, margin = QUALITY_MARGINS[m]
            parts.append(f"{m} {hq[m]:.4f} vs {fp[m]:.4f} "
                         f"(margin {'±' if kind == 'abs' else '+'}{margin:g}"
                         f"{'' if kind == 'abs' else ' rel'}: {'ok' if ok else 'OUT'})")
        lines.append(f"- toy quality at {main_n} steps, quantized vs FP student: "
                     + "; ".join(parts) + f" → {'PASS' if all_ok else 'FAIL'}")
    for claim, better, worse in ORDERINGS:
        o = ordering(results, better, worse)
        if o:
            lines.append(f"- {claim}: **{o['verdict']}** (mean per-step rel. error "
                         f"{o['mean_step_rel'][0]:.4f} vs {o['mean_step_rel'][1]:.4f}; final-latent "
                         f"rel. error {o['final_rel'][0]:.4f} vs {o['final_rel'][1]:.4f})")
    return lines + [""]


def _steps_section(n, r: dict, s: dict) -> list[str]:
    c, fp = r["quant"], r["fp"]
    t = r.get("teacher", {})
    lines = [f"## {n} student steps", ""]
    head = ["metric", f"FP-student({n})", f"quant-student({n})",
            f"FP-teacher({s.get('teacher_steps')})"]
    rows = [
        ["velocity cos vs FP (mean over steps, forced)", "1", c["steps"] and _f(
            float(np.mean([x["cos"] for x in c["steps"]])), 5), "–"],
        ["velocity cos vs FP (min over steps, forced)", "1", _f(c["min_step_cos"], 5), "–"],
        ["velocity rel. error vs FP (mean, forced)", "0", _f(c["mean_step_rel"]), "–"],
        ["final latent rel. error vs FP", "0", _f(c["final_rel"]), _f(t.get("final_rel_vs_fp"))],
        ["PSNR vs FP student (dB)", "∞", _f(c["psnr_vs_fp"], 2), _f(t.get("psnr_vs_fp"), 2)],
        ["SSIM vs FP student", "1", _f(c["ssim_vs_fp"]), _f(t.get("ssim_vs_fp"))],
        ["final latent rel. error vs teacher", _f(fp.get("final_rel_vs_teacher")),
         _f(c.get("final_rel_vs_teacher")), "0"],
        ["PSNR vs teacher (dB)", _f(fp.get("psnr_vs_teacher"), 2),
         _f(c.get("psnr_vs_teacher"), 2), "∞"],
        ["SSIM vs teacher", _f(fp.get("ssim_vs_teacher")), _f(c.get("ssim_vs_teacher")), "1"],
        ["consecutive-frame SSIM", _f(fp.get("temporal_ssim")), _f(c.get("temporal_ssim")),
         _f(t.get("temporal_ssim"))],
    ]
    lines += _table(head, rows) + [""]
    lines += _table(["step", "expert", "t", "cos (forced)", "min cos", "rel (forced)",
                     "cos (free)", "rel (free)"],
                    [[str(x["step"]), x["expert"], _f(x["t"], 1), _f(x["cos"], 5),
                      _f(x["cos_min"], 5), _f(x["rel"]), _f(x["free_cos"], 5), _f(x["free_rel"])]
                     for x in c["steps"]]) + [""]
    pe = c["per_expert"]
    lines += _table(["expert", "mean cos", "min cos", "mean rel (forced)", "mean rel (free)"],
                    [[e, _f(v["cos"], 5), _f(v["cos_min"], 5), _f(v["rel"]), _f(v["free_rel"])]
                     for e, v in pe.items()]) + [""]
    return lines


def _quality(results: dict) -> list[str]:
    q = results["quality"]
    have = set().union(*(v.keys() for v in q.values()))
    cols = [c for c in ("prompt_acc", "attr_acc", "real_rate", "on_mode", "fd", "swd",
                        "diversity") if c in have]
    return ["## Toy-world quality metrics", "",
            "Classifier accuracy, Fréchet distance of classifier features and sliced Wasserstein "
            "distance against held-out real renders (train/toy/metrics.py).", ""] + _table(
        ["sampler"] + cols, [[name] + [_f(v.get(c)) for c in cols] for name, v in q.items()]
    ) + [""]


def _ablations(results: dict) -> list[str]:
    ab = results["ablations"]
    n = results["setup"]["ablation_steps"]
    lines = [f"## Ablations ({n} steps, same pipeline, one change each)", ""]
    rows = []
    reps = results["setup"].get("repeats", 1)

    def ms(a, m, digits=4):
        v = _repeats(a, m)
        return _f(float(v.mean()), digits) + (f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1
                                               else "")

    for name, a in ab.items():
        o = a["options"]
        prot = "; ".join(f"{e}: {','.join(p) or 'none'}" for e, p in a["protected"].items())
        rows.append([name, o["fmt"], o["algorithm"], o["trajectory"], o["stats"], prot,
                     ms(a, "min_step_cos", 5), ms(a, "mean_step_rel"), ms(a, "final_rel"),
                     ms(a, "psnr_vs_fp", 2), ms(a, "ssim_vs_fp")])
    lines += [f"Mean ± standard deviation over {reps} calibration set(s) (different prompts and "
              "noise; the evaluation set is fixed). 'protected' is from the first set.", ""]
    lines += _table(["variant", "format", "algorithm", "trajectory", "stats", "protected",
                     "min step cos", "mean step rel", "final rel", "PSNR vs FP", "SSIM vs FP"],
                    rows) + [""]
    lines += ["### Orderings claimed by the paper", "",
              "Lower error is better. Verdicts use the paired differences over the calibration "
              "sets: 'holds' / 'reversed' when the mean difference exceeds twice its standard "
              f"error, else 'tie' (with a single set: a relative difference below {TIE:.0%}).",
              ""]
    rows = []
    for claim, better, worse in ORDERINGS:
        o = ordering(results, better, worse)
        if o:
            rows.append([claim, _f(o["mean_step_rel"][0]), _f(o["mean_step_rel"][1]),
                         o["mean_step_rel"][2], _f(o["final_rel"][0]), _f(o["final_rel"][1]),
                         o["final_rel"][2], f"**{o['verdict']}**"])
    lines += _table(["claim", "step rel (claimed better)", "step rel (other)", "",
                     "final rel (claimed better)", "final rel (other)", "", "verdict"], rows)
    return lines + [""]


def _calibration_details(results: dict) -> list[str]:
    lines = ["## Calibration details (main variant)", ""]
    for n, r in results["steps"].items():
        cal = r["calibration"]
        lines.append(f"### {n} steps")
        lines.append("")
        for e, rep in cal["experts"].items():
            layers = rep["layers"]
            if not layers:
                lines.append(f"- {e}-noise expert: serves no step of this grid, not quantized")
                continue
            finals = np.array([v["final"] for v in layers.values()])
            rtn = np.array([v["rtn"] for v in layers.values()])
            sens = rep.get("sensitivity")
            sens_txt = ""
            if sens:
                keep = ", ".join(f"{b}: {v:.4f}" for b, v in sens["keep_fp"].items())
                sens_txt = (f"; sensitivity (velocity rel. error, all quantized "
                            f"{sens['all_quantized']:.4f}; keeping one block in fp: {keep})")
            folded = sum(1 for v in layers.values() if v.get("smoothing") == "folded")
            explicit = sum(1 for v in layers.values() if v.get("smoothing") == "explicit")
            absmax = rep.get("step_absmax") or {}
            if absmax:
                sens_txt += ("; median layer input absmax per step: " + ", ".join(
                    f"{k}: {v:.2f}" for k, v in list(absmax.items())[:12])
                    + (" …" if len(absmax) > 12 else ""))
            lines.append(
                f"- {e}: steps {rep['steps']} (t = {', '.join(f'{t:.1f}' for t in rep['timesteps'])}"
                f"); protected {rep['protected'] or 'none'}{sens_txt}; {len(layers)} layers "
                f"quantized, smoothing folded in {folded} / explicit in {explicit}; W4A4 output "
                f"error on calibration tokens: RTN median {np.median(rtn):.4f} → final median "
                f"{np.median(finals):.4f}, worst {finals.max():.4f} "
                f"({max(layers, key=lambda p: layers[p]['final'])})")
        lines.append("")
    return lines


def _plot(path: Path, results: dict) -> str:
    panels = []
    series = []
    for n, r in results["steps"].items():
        st = r["quant"]["steps"]
        series.append((f"{n} steps (forced)", [x["t"] for x in st], [x["rel"] for x in st]))
        series.append((f"{n} steps (free)", [x["t"] for x in st], [x["free_rel"] for x in st]))
    panels.append(("velocity rel. error vs FP student", "timestep t", "rel. error", series))
    if results.get("ablations"):
        series = []
        for name, a in results["ablations"].items():
            st = a["compare"]["steps"]
            series.append((name, [x["t"] for x in st], [x["rel"] for x in st]))
        n = results["setup"]["ablation_steps"]
        panels.append((f"ablations, {n} steps (forced)", "timestep t", "rel. error", series))
    return plot_panels(path, panels)
