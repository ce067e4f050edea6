"""wanjax: Wan2.2 text-to-video in JAX.

Public API (stable):
- `load_dit(path, expert='high'|'low', dtype=None)` -> callable DiT expert
  `model(latents [B, C, F, H, W], timestep [B], context [B, L, text_dim]) -> velocity` (float32).
- `wanjax.quant`: HiF4 and baseline 4-bit formats. `wanjax.sampling`: schedules and solvers.
"""

from wanjax.loading import load_dit

__all__ = ["load_dit"]
