"""Report logic: orderings over calibration sets, step grids, the figure."""

import numpy as np

from train.calibration.plot import plot_panels
from train.calibration.report import ordering
from train.calibration.setup import student_config
from wanjax.sampling.loop import SampleConfig


def _ab(**variants):
    return {"ablations": {k: {"repeats": [{"mean_step_rel": a, "final_rel": b} for a, b in v]}
                          for k, v in variants.items()}}


def test_ordering_verdicts_use_paired_differences():
    r = _ab(main=[(0.10, 0.20), (0.12, 0.22), (0.11, 0.21)],
            other=[(0.13, 0.25), (0.15, 0.27), (0.14, 0.26)])
    assert ordering(r, "main", "other")["verdict"] == "holds"
    assert ordering(r, "other", "main")["verdict"] == "reversed"
    noisy = _ab(main=[(0.10, 0.20), (0.12, 0.22), (0.11, 0.21)],
                other=[(0.12, 0.19), (0.10, 0.24), (0.11, 0.20)])
    assert ordering(noisy, "main", "other")["verdict"] == "tie"
    single = _ab(main=[(0.100, 0.2)], other=[(0.101, 0.3)])  # 1% apart: tie; 40%: holds
    o = ordering(single, "main", "other")
    assert o["mean_step_rel"][2] == "tie" and o["final_rel"][2] == "holds"
    assert o["verdict"] == "mixed"
    assert ordering(single, "main", "missing") is None


def test_student_config_at_other_step_counts():
    base = SampleConfig(timesteps=(1000.0, 750.0, 500.0, 250.0), shift=5.0, solver="x0_renoise",
                        guide_high=1.0, guide_low=1.0, boundary=0.875, phased=True)
    assert student_config(base, 4) is base
    eight = student_config(base, 8)
    assert eight.timesteps == tuple(float(t) for t in np.arange(1000, 0, -125))
    assert (eight.shift, eight.solver, eight.phased) == (5.0, "x0_renoise", True)
    assert len(student_config(base, 20).schedule().timesteps) == 20
    assert student_config(SampleConfig(), 8).num_steps == 8


def test_plot_writes_a_png(tmp_path):
    panel = ("t", "x", "y", [("a", [1, 2, 3], [0.1, 0.01, 0.05]), ("b", [1, 3], [0.2, 0.3])])
    backend = plot_panels(tmp_path / "p.png", [panel, panel])
    assert backend in ("matplotlib", "pillow")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
