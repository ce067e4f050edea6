"""DMD of Wan2.2-T2V-A14B into a 4-step phased student (Self-Forcing+ wan22 recipe, dmd_notes 3).

Run on a pod slice / 8-GPU node with the converted teacher and a text-embedding cache, e.g.
`python -m train.dmd --preset a14b --teacher ckpt/a14b --text-cache cache/prompts --mesh fsdp=8`.
"""

from train.dmd_config import DMDConfig

TEACHER = None  # required on the command line
LATENT_480P = (16, 21, 60, 104)  # 81 frames at 832x480
DMD = DMDConfig(
    raw_timesteps=(1000, 750, 500, 250),
    shift=5.0,
    boundary=0.875,
    guidance_high=5.0,  # SF+ high 4.0 in the x_c + w(x_c - x_u) convention = 5.0 standard
    guidance_low=4.0,
    lr_gen=2e-6,
    lr_critic=4e-7,
    batch_size=64,
    iterations=2000,
    remat=True,
    compute_dtype="bf16",
    # only used with --regression-weight > 0: the teacher's own sampling shift (Wan2.2 A14B: 12),
    # and few pairs, since each is 42 MB of cached latents at 480p (docs/a14b_workflow.md)
    regression_pairs=64,
    regression_ode_shift=12.0,
)
