"""Typed, frozen model configs. Presets live in `configs/<name>.py` as Python code."""

from __future__ import annotations

import dataclasses
import importlib

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Architecture of one Wan DiT expert (`WanModel` in the official code)."""

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int = 16
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    text_dim: int = 4096
    freq_dim: int = 256
    eps: float = 1e-6
    rope_max_len: int = 1024
    rope_theta: float = 10000.0

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim {self.head_dim} must be even and >= 6 for the 3-axis RoPE")
        if self.freq_dim % 2:
            raise ValueError(f"freq_dim {self.freq_dim} must be even")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_dims(self) -> tuple[int, int, int]:
        """Real dims per axis (t, h, w): 44/42/42 for head_dim 128."""
        d = self.head_dim
        hw = 2 * (d // 6)
        return d - 2 * hw, hw, hw

    @property
    def patch_volume(self) -> int:
        pt, ph, pw = self.patch_size
        return pt * ph * pw


@dataclasses.dataclass(frozen=True)
class DualExpertConfig:
    """Wan2.2 A14B: a high-noise expert for `t >= boundary * 1000`, a low-noise expert below."""

    high: DiTConfig
    low: DiTConfig
    boundary: float = 0.875

    @property
    def boundary_timestep(self) -> float:
        return self.boundary * 1000.0


@dataclasses.dataclass(frozen=True)
class Precision:
    """Where numbers live: `param_dtype` stores weights, `compute_dtype` runs matmuls and attention.

    The official precision islands (time MLP, modulation, gates, residual stream, head in float32)
    hold regardless of `compute_dtype`.
    """

    param_dtype: jnp.dtype = jnp.float32
    compute_dtype: jnp.dtype = jnp.float32

    @classmethod
    def named(cls, name: str) -> Precision:
        presets = {
            "fp32": cls(jnp.float32, jnp.float32),
            "bf16": cls(jnp.bfloat16, jnp.bfloat16),
            "fp32-bf16": cls(jnp.float32, jnp.bfloat16),
        }
        if name not in presets:
            raise ValueError(f"unknown precision {name!r}; choose one of {sorted(presets)}")
        return presets[name]


PRESETS = ("a14b", "ti2v_5b", "tiny")


def get_preset(name: str):
    """Returns the `configs.<name>` module (which defines `MODEL` and friends)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    return importlib.import_module(f"configs.{name}")
