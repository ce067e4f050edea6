"""Tiny random dual-expert students for the calibration tests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from wanjax.config import DiTConfig, DualExpertConfig
from wanjax.io import checkpoint
from wanjax.io.params import flat_params
from wanjax.models.dit import WanDiT
from wanjax.sampling.loop import SampleConfig

# The A14B layout at tiny size: configs/tiny.py (2 blocks, 16 latent channels, patch 1x2x2).
TINY = DiTConfig(dim=64, ffn_dim=128, num_heads=4, num_layers=2, in_dim=16, out_dim=16,
                 text_dim=32, freq_dim=32, text_len=16)
STUDENT_CFG = SampleConfig(timesteps=(1000.0, 750.0, 500.0, 250.0), shift=5.0,
                           solver="x0_renoise", guide_high=1.0, guide_low=1.0, boundary=0.875,
                           phased=True)


def random_expert(seed: int, cfg: DiTConfig = TINY) -> WanDiT:
    m = WanDiT(cfg, rngs=nnx.Rngs(seed))
    head = m.head.proj.kernel
    head.set_value(jax.random.normal(jax.random.key(seed + 100), head.shape) * 0.1)
    return m


def random_student(seed: int = 0, cfg: DiTConfig = TINY) -> dict[str, WanDiT]:
    return {"high": random_expert(seed, cfg), "low": random_expert(seed + 1, cfg)}


def save_student(path: Path, student: dict[str, WanDiT], sample_cfg: SampleConfig = STUDENT_CFG,
                 boundary: float = 0.875) -> Path:
    """A student checkpoint as `train.trainer.export_student` writes it."""
    path.mkdir(parents=True, exist_ok=True)
    comps = {}
    for e, m in student.items():
        checkpoint.save_params(path / f"dit_{e}", {k: np.asarray(v) for k, v in
                                                   flat_params(m).items()})
        comps[f"dit_{e}"] = {"config": checkpoint.dit_config_to_json(m.cfg),
                             "params": f"dit_{e}", "trained": True}
    checkpoint.write_manifest(path, {
        "dtype": "float32", "components": comps, "boundary": boundary,
        "student": {"sample_config": json.loads(json.dumps(dataclasses.asdict(sample_cfg)))},
    })
    return path


def dual_config(cfg: DiTConfig = TINY) -> DualExpertConfig:
    return DualExpertConfig(high=cfg, low=cfg, boundary=0.875)
