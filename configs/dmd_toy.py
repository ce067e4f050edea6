"""DMD on the toy world: the built-in default of `python -m train.dmd` (minutes on a 2-core CPU).

Scales follow the CPU toy check in dmd_notes section 6 (critic faster than the generator,
betas (0, 0.999), clip 1, EMA 0.99), with a 4-step phased student as in the A14B recipe.
"""

from configs import toy
from train.dmd_config import DMDConfig

TEACHER = toy.TEACHER_PATH
DMD = DMDConfig(
    raw_timesteps=toy.FEW_STEP_TIMESTEPS[4],
    shift=toy.FEW_STEP_SHIFT,
    boundary=toy.BOUNDARY,
    guidance_high=toy.GUIDE_SCALE_HIGH,
    guidance_low=toy.GUIDE_SCALE_LOW,
    lr_gen=5e-5,
    lr_critic=2e-4,
    ema_start=50,
    batch_size=32,
    iterations=1000,
    remat=False,
    compute_dtype="fp32",
    regression_ode_shift=toy.SAMPLE_SHIFT,  # with --regression-weight: the teacher's own shift
    gan_lr=1e-3,  # with --gan-weight: the fresh head must learn within the run's few updates
)
