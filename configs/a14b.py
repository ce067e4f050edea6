"""Wan2.2-T2V-A14B: two 14.29B experts (wan/configs/wan_t2v_A14B.py)."""

from wanjax.config import DiTConfig, DualExpertConfig

EXPERT = DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16, out_dim=16)
MODEL = DualExpertConfig(high=EXPERT, low=EXPERT, boundary=0.875)

# Official sampling defaults.
SAMPLE_SHIFT = 12.0
SAMPLE_STEPS = 40
GUIDE_SCALE_HIGH = 4.0
GUIDE_SCALE_LOW = 3.0
FRAME_NUM = 81
SIZE = "1280*720"
FPS = 16
