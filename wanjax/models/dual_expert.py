"""The Wan2.2 A14B dual-expert model as one object: high-noise and low-noise experts + boundary."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool

from wanjax.config import DualExpertConfig, Precision
from wanjax.models.attention import Backend
from wanjax.models.dit import WanDiT

_FP32 = Precision()

EXPERTS = ("high", "low")


class DualExpertDiT(nnx.Module):
    """High-noise expert for `t >= boundary * 1000`, low-noise expert below (official routing)."""

    def __init__(
        self,
        cfg: DualExpertConfig,
        prec: Precision = _FP32,
        *,
        rngs: nnx.Rngs,
        remat: bool = False,
        attention_backend: Backend = "auto",
    ):
        self.cfg = cfg
        kw = dict(rngs=rngs, remat=remat, attention_backend=attention_backend)
        self.high = WanDiT(cfg.high, prec, **kw)
        self.low = WanDiT(cfg.low, prec, **kw)

    @property
    def boundary_timestep(self) -> float:
        return self.cfg.boundary_timestep

    def is_high(self, timestep: Array) -> Bool[Array, ...]:
        """True where the high-noise expert owns timestep `t` (`t >= boundary * 1000`)."""
        return jnp.asarray(timestep) >= self.cfg.boundary_timestep

    def expert(self, name: str) -> WanDiT:
        if name not in EXPERTS:
            raise ValueError(f"unknown expert {name!r}; choose one of {EXPERTS}")
        return self.high if name == "high" else self.low
