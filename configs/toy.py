"""The DMD toy world: tiny procedurally rendered "videos" and a tiny dual-expert Wan teacher.

No VAE: videos live directly in the DiT's input space, `[3, FRAMES, HEIGHT, WIDTH]` in [-1, 1].
Everything here is sized so that teacher training and DMD distillation run on a 2-core CPU in
minutes (train/toy/README.md).
"""

from wanjax.config import DiTConfig, DualExpertConfig

# World (train/toy/world.py).
FRAMES = 3
# 20 x 20 frames put the frame centre (9.5, 9.5) on a patch centre, so that every lane and every
# position along the motion (the centre +- 4 px, one patch) is a patch centre too: each frame's
# shape sits (mostly) in one token. At 16 x 16 the shapes straddled patch corners (four tokens
# each) and the teacher learned about 3x slower per step (train/toy/README.md).
HEIGHT = 20
WIDTH = 20
TEXT_DIM = 32  # width of the toy text encoder's embedding table
TEXT_LEN = 8  # the DiT pads contexts (4 tokens: colour, shape, direction, <eos>) to this

# Teacher: the A14B layout (two experts split at the boundary) at toy size. A (1, 4, 4) patch
# gives 3 x 5 x 5 = 75 tokens, which keeps a training step at a few hundred ms on a 2-core CPU.
EXPERT = DiTConfig(
    dim=128, ffn_dim=256, num_heads=4, num_layers=4, in_dim=3, out_dim=3, patch_size=(1, 4, 4),
    text_len=TEXT_LEN, text_dim=TEXT_DIM, freq_dim=32,
)
BOUNDARY = 0.875
TEACHER = DualExpertConfig(high=EXPERT, low=EXPERT, boundary=BOUNDARY)
TEACHER_PATH = "train/toy/assets/teacher"
CLASSIFIER_PATH = "train/toy/assets/classifier"

# Teacher training (train/toy/teacher.py): sigma = shift(u), u ~ U[0, 1], each expert on its side
# of the boundary.
TRAIN_SHIFT = 3.0
PROMPT_DROPOUT = 0.1

# Sampling (wanjax.sampling.loop.SampleConfig).
SAMPLE_SHIFT = 3.0
TEACHER_STEPS = 40
GUIDE_SCALE_HIGH = 3.0
GUIDE_SCALE_LOW = 3.0
# Few-step grids (raw timesteps, warped through `FEW_STEP_SHIFT`): teacher baselines and students.
FEW_STEP_SHIFT = 5.0
FEW_STEP_TIMESTEPS = {
    1: (1000.0,),
    2: (1000.0, 500.0),
    4: (1000.0, 750.0, 500.0, 250.0),
}
