"""A tiny dual-expert model with the A14B architecture, for tests and CPU demos."""

from wanjax.config import DiTConfig, DualExpertConfig

EXPERT = DiTConfig(
    dim=64, ffn_dim=128, num_heads=4, num_layers=2, in_dim=16, out_dim=16, text_dim=32, freq_dim=32,
    text_len=16,
)
MODEL = DualExpertConfig(high=EXPERT, low=EXPERT, boundary=0.875)

SAMPLE_SHIFT = 12.0
SAMPLE_STEPS = 40
GUIDE_SCALE_HIGH = 4.0
GUIDE_SCALE_LOW = 3.0
