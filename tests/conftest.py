"""Test-wide settings: float32 matmuls at full precision so parity tolerances mean something."""

import sys
from pathlib import Path

import jax

jax.config.update("jax_default_matmul_precision", "highest")
sys.path.insert(0, str(Path(__file__).parent))  # for the shared `torch_refs` helpers
sys.path.insert(0, str(Path(__file__).parent / "parallel"))  # subprocess check helpers

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
