"""wanjax: Wan2.2 text-to-video in JAX.

Public API (stable):
- `load_dit(path, expert='high'|'low', dtype=None)` -> callable DiT expert
  `model(latents [B, C, F, H, W], timestep [B], context [B, L, text_dim]) -> velocity` (float32).
- `load_text_encoder(path, dtype=None)` -> umT5 encoder module `(ids, mask) -> hidden`;
  `tokenizer_path(path)` -> its tokenizer folder (for `wanjax.text.tokenizer.Tokenizer`) or None.
- `load_vae(path, dtype=None)` -> Wan VAE module (`encode`, `decode`).
- `wanjax.quant`: HiF4 and baseline 4-bit formats. `wanjax.sampling`: schedules and solvers.

`path` is a converted checkpoint (`python -m convert.wan SRC DST`) or an unconverted snapshot.
"""

from wanjax.loading import load_dit, load_text_encoder, load_vae, tokenizer_path

__all__ = ["load_dit", "load_text_encoder", "load_vae", "tokenizer_path"]
