"""Independent numpy references for the HiF4 tests, written from `shared/docs/hif4_format.md`.

Rounding steps (bf16, E6M2) use float64 `frexp`/`round`, which share no code with the JAX bit
tricks under test; the float32 steps use numpy float32 scalars/arrays, which are IEEE exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
GOLDEN = SHARED / "golden" / "lowbit_fake_quant.npz"


def round_significant(v: np.ndarray, bits: int) -> np.ndarray:
    """Round positive finite values to `bits` significant bits, ties to even (float64 exact)."""
    v = np.asarray(v, np.float64)
    mant, exp = np.frexp(v)  # v = mant * 2^exp, mant in [0.5, 1)
    return np.ldexp(np.round(mant * 2.0**bits) / 2.0**bits, exp)


def bf16(v: np.ndarray) -> np.ndarray:
    return round_significant(v, 8).astype(np.float32)


def hif4_fake_quant_lastaxis(x: np.ndarray) -> np.ndarray:
    """HiF4 quantize-dequantize of a float32 array along its last axis (spec steps 1-7)."""
    x = np.asarray(x, np.float32)
    n = x.shape[-1]
    padded = np.zeros((*x.shape[:-1], -(-n // 64) * 64), np.float32)
    padded[..., :n] = x
    g = np.abs(padded).reshape(*x.shape[:-1], -1, 8, 2, 4)
    m4 = g.max(-1)
    m8 = m4.max(-1)
    m64 = m8.max(-1)
    s0 = bf16(m64 * bf16(np.float32(1) / np.float32(7)))
    s0 = np.clip(s0, np.float32(2.0**-48), np.float32(49152)).astype(np.float32)
    scale = round_significant(s0, 3).astype(np.float32)
    rec = bf16(np.float32(1) / scale)
    a = (m8 * rec[..., None] >= 4).astype(np.float32)
    pa = np.float32(2) ** a
    b = ((m4 * rec[..., None, None]) / pa[..., None] >= 2).astype(np.float32)
    pb = np.float32(2) ** b
    t = (g / pa[..., None, None] / pb[..., None]) * rec[..., None, None, None]
    q = np.minimum(np.floor(t * np.float32(4) + np.float32(0.5)), 7)
    value = (q / 4) * pa[..., None, None] * pb[..., None] * scale[..., None, None, None]
    value = np.where(padded.reshape(g.shape) < 0, -value, value).astype(np.float32)
    return value.reshape(padded.shape)[..., :n]


def hif4_fake_quant(x: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(np.asarray(x, np.float32), axis, -1)
    return np.moveaxis(hif4_fake_quant_lastaxis(moved), -1, axis)


def decode_group_bytes(group: np.ndarray) -> np.ndarray:
    """Decode one canonical 36-byte group to 64 float64 values, bit by bit as the spec words it."""
    group = [int(v) for v in group]
    codes = []
    for byte in group[:32]:
        codes += [byte >> 4, byte & 0xF]
    e6m2, sub8_byte = group[32], group[33]
    sub4_word = (group[34] << 8) | group[35]
    if e6m2 == 0xFF:
        return np.full(64, np.nan)
    scale = (1 + (e6m2 & 3) / 4) * 2.0 ** ((e6m2 >> 2) - 48)
    out = np.empty(64)
    for i, code in enumerate(codes):
        a = (sub8_byte >> (7 - i // 8)) & 1
        b = (sub4_word >> (15 - i // 4)) & 1
        sign = -1.0 if code >> 3 else 1.0
        out[i] = sign * ((code & 7) / 4) * 2.0 ** (a + b) * scale
    return out
