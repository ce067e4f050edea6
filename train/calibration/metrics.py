"""Error metrics of the evaluation: velocity cosine / relative error, PSNR, SSIM.

SSIM is the standard one (Wang et al. 2004): an 11x11 Gaussian window with sigma 1.5, 'valid'
filtering, C1 = (0.01 L)^2, C2 = (0.03 L)^2 for data range L, computed per channel and frame
and averaged. Frames smaller than 11 pixels use the largest odd window that fits (same sigma).
"""

from __future__ import annotations

import numpy as np

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def _flat(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a.reshape(len(a), -1)


def cosine(a, b) -> np.ndarray:
    """Per-sample cosine similarity of `a` and `b` `[B, ...]`."""
    a, b = _flat(a), _flat(b)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(den, 1e-30)


def relative_error(a, ref) -> np.ndarray:
    """Per-sample ||a - ref|| / ||ref||."""
    a, ref = _flat(a), _flat(ref)
    return np.linalg.norm(a - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-30)


def psnr(a, ref, data_range: float = 2.0) -> np.ndarray:
    """Per-sample PSNR in dB (inf where identical)."""
    mse = np.mean((_flat(a) - _flat(ref)) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering over the last two axes."""
    win = len(g)
    x = np.lib.stride_tricks.sliding_window_view(x, win, axis=-1) @ g
    x = np.lib.stride_tricks.sliding_window_view(x, win, axis=-2) @ g
    return x


def ssim_map(a, b, data_range: float = 2.0, window: int = WINDOW) -> np.ndarray:
    """The SSIM map of images `[..., H, W]` (valid region)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    size = min(window, a.shape[-1], a.shape[-2])
    size -= 1 - size % 2  # odd
    g = gaussian_window(size)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = _filter(a, g), _filter(b, g)
    var_a = _filter(a * a, g) - mu_a**2
    var_b = _filter(b * b, g) - mu_b**2
    cov = _filter(a * b, g) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) *
                                                        (var_a + var_b + c2))


def ssim(a, b, data_range: float = 2.0) -> np.ndarray:
    """Per-sample mean SSIM of videos `[B, C, F, H, W]` (or images `[B, C, H, W]`)."""
    m = ssim_map(a, b, data_range)
    return m.reshape(len(m), -1).mean(axis=1)


def temporal_ssim(videos, data_range: float = 2.0) -> np.ndarray:
    """Per-sample mean SSIM between consecutive frames of `[B, C, F, H, W]` (a consistency
    proxy: what a flickering or drifting sample loses)."""
    v = np.asarray(videos, np.float64)
    if v.ndim != 5 or v.shape[2] < 2:
        raise ValueError(f"need videos [B, C, F >= 2, H, W], got {v.shape}")
    m = ssim_map(v[:, :, 1:], v[:, :, :-1], data_range)
    return m.reshape(len(m), -1).mean(axis=1)
