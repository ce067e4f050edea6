"""DMD2 distillation settings (a frozen dataclass; presets in `configs/dmd_*.py`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from wanjax.sampling.loop import SampleConfig
from wanjax.sampling.schedules import few_step_schedule

MOE_MODES = ("phased", "joint")
HANDOVERS = ("bridge", "x0_bridge", "x0_renoise")


@dataclasses.dataclass(frozen=True)
class DMDConfig:
    """Everything `python -m train.dmd` needs besides paths. Defaults follow dmd_notes section 3
    (Self-Forcing+ / FastVideo recipes) where they transfer; the toy preset overrides the scales."""

    # student: raw timesteps warped through `shift`, routed to experts by `boundary`
    raw_timesteps: tuple[float, ...] = (1000, 750, 500, 250)
    shift: float = 5.0
    boundary: float = 0.875
    moe_mode: Literal["phased", "joint"] = "phased"
    # phased: how the high stage is scored and hands over to the low one. 'bridge' (dmd_notes
    # section 4): its endpoint is the latent at sigma_b on the rectified-flow bridge, scored only
    # above sigma_b. 'x0_*': its x0 prediction is scored over the whole noise range by both
    # teacher experts and a routed critic (as a joint run scores it, so that it must choose a
    # mode where the low expert's levels see a mixture; the stage then holds both critic
    # experts), and the low step starts from the bridge latent at sigma_b made by the same
    # velocity ('x0_bridge') or from the x0 renoised to sigma_b with fresh noise ('x0_renoise',
    # the x0-renoise sampler).
    handover: Literal["bridge", "x0_bridge", "x0_renoise"] = "bridge"
    # real score (teacher) guidance, standard CFG convention, per expert
    guidance_high: float = 4.0
    guidance_low: float = 3.0
    # noise levels for the DMD and critic losses (raw, before the shift)
    t_min: float = 0.02
    t_max: float = 0.98
    phase_margin: float = 0.04
    # shift of those draws, sigma = shift(u) (None: the student's `shift`); a smaller one spends
    # more of both losses at low noise, where faint defects (ghost copies) are visible
    noise_shift: float | None = None
    # two-time-scale updates: critic steps per generator step
    critic_ratio: int = 5
    # optimisation (AdamW, separate for generator and critic)
    lr_gen: float = 2e-6
    lr_critic: float = 4e-7
    b1: float = 0.0
    b2: float = 0.999
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.99
    ema_start: int = 200
    # optional regression on teacher ODE pairs (DMD eq. 9; 0: off, as DMD2 and the Wan recipes):
    # generator loss = DMD + weight * mean((student endpoint from the ODE point - ODE endpoint)^2)
    regression_weight: float = 0.0
    regression_pairs: int = 1024  # pairs made once per run with the teacher (cached in OUT)
    regression_ode_steps: int = 40  # Euler steps of the teacher's CFG flow ODE
    regression_ode_shift: float = 3.0
    # optional GAN term (DMD2 section 4.3; 0: off): a head on the critic's last-block tokens
    # tells noised generated samples from noised real ones: the teacher's ODE endpoints (the
    # regression pairs; no data needed) or, with gan_real='data', the world's real latents;
    # generator loss += gan_weight * -log D(fake), critic loss += gan_critic_weight * BCE
    gan_weight: float = 0.0
    gan_real: Literal["teacher", "data"] = "teacher"
    gan_critic_weight: float = 0.01
    # shift of the GAN term's own noise-level draws (None: it shares the DMD loss's draws, one
    # critic pass); a small one (e.g. 1) judges realness where faint defects show while the DMD
    # term keeps its high-noise levels, where the prompt's layout is decided (a second pass)
    gan_noise_shift: float | None = None
    # weight of time-reversed real samples as extra fakes for the discriminator (0: off): the
    # frames of a real video played backwards each look real, so the head can only reject them
    # by reading the motion against the prompt (the toy 2-step student's direction errors were
    # all exact reversals); the critic's GAN batch grows from 2B to 3B
    gan_reversed_weight: float = 0.0
    # the stages that run the GAN term (None: all); e.g. ('low',) skips it in a phased high
    # stage whose samples stay so noisy (sigma >= the hand-over level) that the head stays at
    # chance there (toy 2-step student: BCE 1.384 against log 4) while it costs a pass
    gan_stages: tuple[str, ...] | None = None
    gan_lr: float = 1e-4  # the head's own AdamW
    gan_hidden: int = 256
    # run
    batch_size: int = 1
    iterations: int | tuple[int, ...] = 3000  # critic iterations: every stage, or one per stage
    seed: int = 0
    remat: bool = True
    compute_dtype: Literal["fp32", "bf16"] = "bf16"

    def __post_init__(self):
        if self.moe_mode not in MOE_MODES:
            raise ValueError(f"moe_mode must be 'phased' or 'joint', got {self.moe_mode!r}")
        if self.handover not in HANDOVERS:
            raise ValueError(f"handover must be one of {HANDOVERS}, got {self.handover!r}")
        if self.handover != "bridge" and self.moe_mode != "phased":
            raise ValueError(f"handover {self.handover!r} is a phased setting (a joint run has "
                             "no hand-over)")
        counts = self.iterations if isinstance(self.iterations, tuple) else (self.iterations,)
        if self.critic_ratio < 1 or min(counts) < 1 or self.batch_size < 1:
            raise ValueError("critic_ratio, iterations and batch_size must be >= 1")
        if self.regression_weight < 0 or self.regression_pairs < 1 or self.regression_ode_steps < 1:
            raise ValueError("need regression_weight >= 0, regression_pairs >= 1 and "
                             "regression_ode_steps >= 1")
        if self.gan_weight < 0 or self.gan_critic_weight < 0 or self.gan_lr <= 0 \
                or self.gan_hidden < 1:
            raise ValueError("need gan_weight >= 0, gan_critic_weight >= 0, gan_lr > 0 and "
                             "gan_hidden >= 1")
        if self.gan_real not in ("teacher", "data"):
            raise ValueError(f"gan_real must be 'teacher' or 'data', got {self.gan_real!r}")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.noise_shift is not None and self.noise_shift <= 0:
            raise ValueError(f"noise_shift must be > 0, got {self.noise_shift}")
        if self.gan_noise_shift is not None and self.gan_noise_shift <= 0:
            raise ValueError(f"gan_noise_shift must be > 0, got {self.gan_noise_shift}")
        if self.gan_reversed_weight < 0:
            raise ValueError(f"gan_reversed_weight must be >= 0, got {self.gan_reversed_weight}")
        few_step_schedule(self.raw_timesteps, self.shift)  # validates the list
        if self.gan_stages is not None and (
                not self.gan_stages or not set(self.gan_stages) <= set(self.stages())):
            raise ValueError(f"gan_stages must be some of this run's stages {self.stages()}, "
                             f"got {self.gan_stages}")
        if isinstance(self.iterations, tuple) and len(self.iterations) != len(self.stages()):
            raise ValueError(f"iterations: one count, or one per stage {self.stages()}, got "
                             f"{len(self.iterations)}")

    @property
    def uses_gan(self) -> bool:
        return self.gan_weight > 0

    def gan_in_stage(self, name: str) -> bool:
        return self.uses_gan and (self.gan_stages is None or name in self.gan_stages)

    @property
    def uses_ode_pairs(self) -> bool:
        """Whether the run needs teacher ODE pairs (regression targets or GAN real samples)."""
        return self.regression_weight > 0 or (self.uses_gan and self.gan_real == "teacher")

    @property
    def loss_shift(self) -> float:
        """The shift of the DMD / critic noise-level draws."""
        return self.shift if self.noise_shift is None else self.noise_shift

    @property
    def sigmas(self) -> np.ndarray:
        return np.asarray(few_step_schedule(self.raw_timesteps, self.shift).sigmas, np.float32)

    def sample_config(self) -> SampleConfig:
        """How to sample the student: exactly the transitions it was trained with."""
        return SampleConfig(
            timesteps=tuple(float(t) for t in self.raw_timesteps), shift=self.shift,
            solver="x0_renoise", guide_high=1.0, guide_low=1.0, boundary=self.boundary,
            phased=self.moe_mode == "phased" and self.handover != "x0_renoise",
        )

    @property
    def num_high_steps(self) -> int:
        return self.sample_config().num_high_steps()

    def iterations_of(self, stage: str) -> int:
        """The critic iterations of `stage` (one count for every stage, or one per stage)."""
        if isinstance(self.iterations, int):
            return self.iterations
        return self.iterations[self.stages().index(stage)]

    def stages(self) -> tuple[str, ...]:
        """Training stages in order: ('high', 'low') when phased (fewer if the student's steps
        all belong to one expert), ('joint',) otherwise."""
        if self.moe_mode == "joint":
            return ("joint",)
        k, n_high = len(self.raw_timesteps), self.num_high_steps
        return tuple(s for s, n in (("high", n_high), ("low", k - n_high)) if n > 0)
