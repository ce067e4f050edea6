"""Wan2.2-TI2V-5B: a single 5B model on the 48-channel Wan2.2 VAE (wan/configs/wan_ti2v_5B.py)."""

from wanjax.config import DiTConfig

MODEL = DiTConfig(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48)

SAMPLE_SHIFT = 5.0
SAMPLE_STEPS = 50
GUIDE_SCALE = 5.0
FRAME_NUM = 121
SIZE = "1280*704"
FPS = 24
