"""Pallas kernels for packed HiF4 matmuls (W4A16, and W4A4 with activations quantized first).

- `hif4_matmul(x, w_packed, *, backend='auto'|'tpu'|'gpu'|'reference', interpret=False)`:
  `x[M, K] @ dequant(W)[K, N]` for `w_packed = wanjax.quant.pack(W, 'hif4', axis=0)` or its kernel
  layout `to_tiled(w_packed)`.
- `to_tiled` / `to_canonical`: the lossless repacking into the kernel layout and back (`layout`).
- `BlockSizes`: tile and threshold overrides (`blocks`).

Design notes and measurements: `kernels_pallas/README.md`.
"""

from kernels_pallas.blocks import BlockSizes
from kernels_pallas.dispatch import BACKENDS, hif4_matmul
from kernels_pallas.layout import TiledWeight, abstract_tiled, to_canonical, to_tiled
from kernels_pallas.reference import dequantize

__all__ = [
    "BACKENDS",
    "BlockSizes",
    "TiledWeight",
    "abstract_tiled",
    "dequantize",
    "hif4_matmul",
    "to_canonical",
    "to_tiled",
]
