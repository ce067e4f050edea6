"""Positional and timestep embeddings, and (un)patchify, exactly as the official Wan DiT.

The official code computes the timestep sinusoid and the RoPE tables in float64. RoPE tables depend
only on static grid sizes, so we build them in numpy float64. The sinusoid depends on traced
timesteps, so we evaluate it in float32 with an error-free split of `t * omega` and a Cody-Waite
range reduction: the result matches float64 to ~2e-7 instead of the ~6e-5 of a plain float32
product at t ~ 1000.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

_TWO_PI = 2.0 * np.pi


def _split12(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Splits float64 values into a float32 with 12 significant bits and a float32 remainder."""
    hi = np.zeros_like(x, dtype=np.float32)
    nz = x != 0
    exp = np.floor(np.log2(np.abs(x[nz])))
    scale = 2.0 ** (exp - 11)
    hi[nz] = (np.round(x[nz] / scale) * scale).astype(np.float32)
    return hi, (x - hi.astype(np.float64)).astype(np.float32)


def _truncate12_f32(x: Array) -> Array:
    """Keeps the 12 leading significant bits of a float32 (exact, by masking the mantissa)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF800), jnp.float32)


def timestep_sinusoid(t: Float[Array, "*b"], dim: int) -> Float[Array, "*b dim"]:
    """`[cos(t*w_i), sin(t*w_i)]`, `w_i = 10000^(-i/(dim/2))`, accurate to float64 within ~2e-7."""
    half = dim // 2
    omega = np.power(10000.0, -np.arange(half, dtype=np.float64) / half)
    w_hi, w_lo = _split12(omega)
    c1, rest = _split12(np.array([_TWO_PI]))
    c2, c3 = _split12(rest.astype(np.float64))

    t = jnp.asarray(t, jnp.float32)[..., None]
    t_hi = _truncate12_f32(t)
    t_lo = t - t_hi
    p_exact = t_hi * w_hi  # 12 x 12 significant bits: exact in float32
    p_small = t_hi * w_lo + t_lo * w_hi + t_lo * w_lo
    k = jnp.round(p_exact / np.float32(_TWO_PI))
    reduced = (p_exact - k * c1[0]) - k * c2[0]  # both products exact, first difference exact
    angle = reduced + (p_small - k * c3[0])
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def rope_tables(
    grid: tuple[int, int, int], dims: tuple[int, int, int], theta: float = 10000.0
) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables `[F*H*W, head_dim/2]` for 3-axis RoPE over a (f, h, w) patch grid.

    Axis a owns `dims[a]/2` complex slots with frequencies `theta^(-2j/dims[a])` (each axis
    normalised by its own width); slot order is t, then h, then w. Built in float64.
    """
    angles = []
    for axis, (n, d) in enumerate(zip(grid, dims, strict=True)):
        omega = np.power(theta, -np.arange(0, d, 2, dtype=np.float64) / d)
        ang = np.arange(n, dtype=np.float64)[:, None] * omega[None, :]
        shape = [1, 1, 1, d // 2]
        shape[axis] = n
        angles.append(np.broadcast_to(ang.reshape(shape), (*grid, d // 2)))
    ang = np.concatenate(angles, axis=-1).reshape(-1, sum(dims) // 2)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(
    x: Float[Array, "b l n d"], cos: Float[Array, "l d2"], sin: Float[Array, "l d2"]
) -> Float[Array, "b l n d"]:
    """Rotates interleaved pairs `(x[2k], x[2k+1])` in float32; returns the input dtype."""
    b, seq, n, d = x.shape
    pairs = x.astype(jnp.float32).reshape(b, seq, n, d // 2, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = jnp.stack([re * c - im * s, re * s + im * c], axis=-1)
    return out.reshape(b, seq, n, d).astype(x.dtype)


def patchify(
    x: Float[Array, "b f h w c"], patch: tuple[int, int, int]
) -> Float[Array, "b l p"]:
    """Channels-last latents to patch vectors ordered (kt, kh, kw, c), tokens row-major in (f,h,w)."""
    b, f, h, w, c = x.shape
    pt, ph, pw = patch
    x = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, (f // pt) * (h // ph) * (w // pw), pt * ph * pw * c)


def unpatchify(
    u: Float[Array, "b l p"], grid: tuple[int, int, int], patch: tuple[int, int, int]
) -> Float[Array, "b c f h w"]:
    """Head output features ordered (kt, kh, kw, c) back to `[B, C, F, H, W]`."""
    b = u.shape[0]
    gf, gh, gw = grid
    pt, ph, pw = patch
    u = u.reshape(b, gf, gh, gw, pt, ph, pw, -1)
    u = u.transpose(0, 7, 1, 4, 2, 5, 3, 6)
    return u.reshape(b, -1, gf * pt, gh * ph, gw * pw)
