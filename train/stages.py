"""What one training stage covers: its student steps, endpoint, expert and noise-level range.

Phased (default, dmd_notes section 4): stage 'high' trains the high-noise expert on the student's
high steps with endpoint tau = sigma_b (the first low step's noise level); stage 'low' trains the
low-noise expert on the remaining steps from the frozen stage-1 hand-over latent, endpoint x0.
With `handover='x0_*'` stage 'high' is scored on its x0 prediction, over the whole noise range.
Joint: one stage over all steps, every network routed per noise level.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from train.dmd_config import DMDConfig


def unshift(sigma: float, shift: float) -> float:
    """Inverse of sigma = k u / (1 + (k - 1) u)."""
    return sigma / (shift - (shift - 1.0) * sigma)


def shift_raw(u, shift: float):
    return shift * u / (1.0 + (shift - 1.0) * u)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str  # 'high' | 'low' | 'joint'
    first: int  # first trainable student step
    stop: int  # one past the last
    tau: float  # endpoint noise level of this stage's generator
    raw_lo: float  # DMD / critic noise levels: u ~ U(raw_lo, raw_hi), sigma = shift(u)
    raw_hi: float

    @property
    def num_steps(self) -> int:
        return self.stop - self.first

    def sigma_range(self, shift: float) -> tuple[float, float]:
        """The noise levels (sigma) the stage's DMD and critic losses draw from."""
        return float(shift_raw(self.raw_lo, shift)), float(shift_raw(self.raw_hi, shift))

    def crosses(self, boundary: float, shift: float) -> bool:
        """Whether those noise levels reach both experts' sides of the boundary, so that scores
        at them must be routed per noise level (the low-noise expert owns sigma < boundary)."""
        lo, hi = self.sigma_range(shift)
        return lo < boundary <= hi

    def reshifted(self, shift: float, new_shift: float) -> Stage:
        """The same sigma range, with its raw bounds for draws warped by `new_shift`."""
        lo, hi = self.sigma_range(shift)
        return dataclasses.replace(self, raw_lo=unshift(lo, new_shift), raw_hi=unshift(hi, new_shift))


def make_stage(cfg: DMDConfig, name: str) -> Stage:
    sigmas = cfg.sigmas
    k, n_high = len(sigmas) - 1, cfg.num_high_steps
    if name == "joint":
        return Stage("joint", 0, k, 0.0, cfg.t_min, cfg.t_max)
    if name == "high":
        tau = float(sigmas[n_high]) if n_high < k else 0.0
        if tau == 0.0:  # every step is high-noise: an ordinary x0 student
            return Stage("high", 0, k, 0.0, cfg.t_min, cfg.t_max)
        if cfg.handover != "bridge":  # its x0 is scored; the sampler's hand-over is unchanged
            return Stage("high", 0, n_high, 0.0, cfg.t_min, cfg.t_max)
        raw_b = unshift(tau, cfg.loss_shift)
        m = cfg.phase_margin * (1.0 - raw_b)
        return Stage("high", 0, n_high, tau, raw_b + m, 1.0 - m)
    if name == "low":
        if n_high == 0:
            return Stage("low", 0, k, 0.0, cfg.t_min, cfg.t_max)
        raw_b = unshift(float(sigmas[n_high]), cfg.loss_shift)
        return Stage("low", n_high, k, 0.0, cfg.phase_margin * raw_b,
                     (1.0 - cfg.phase_margin) * raw_b)
    raise ValueError(f"unknown stage {name!r}")


def renoise_targets(cfg: DMDConfig) -> np.ndarray:
    return cfg.sample_config().renoise_targets()
