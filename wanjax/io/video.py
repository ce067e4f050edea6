"""Writing videos: H.264 mp4 through imageio-ffmpeg, plus a JSON sidecar with the settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from jaxtyping import Float


def to_uint8(video: Float[np.ndarray, "3 t h w"], scale: int = 1) -> np.ndarray:
    """[-1, 1] float video -> `[T, H*scale, W*scale, 3]` uint8 frames (nearest upscaling)."""
    frames = np.clip((np.asarray(video, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    frames = frames.transpose(1, 2, 3, 0)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    return frames


def write_mp4(path: str | Path, video: Float[np.ndarray, "3 t h w"], fps: int = 16,
              scale: int = 1) -> Path:
    """Encodes one video (libx264, yuv420p); written to a temp name and renamed when complete."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    frames = list(to_uint8(video, scale))
    try:
        imageio.mimwrite(tmp, frames, fps=fps, codec="libx264", macro_block_size=1,
                         pixelformat="yuv420p", quality=8)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_sidecar(path: str | Path, info: dict) -> Path:
    path = Path(path).with_suffix(".json")
    path.write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    return path
