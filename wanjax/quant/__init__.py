"""4-bit block quantization for W4A4 linears: HiF4 (bit-exact) and baseline formats.

- `fake_quant(x, fmt='hif4'|'nvfp4'|'mxfp4'|'int4', axis=-1)`: quantize-dequantize along `axis`.
- `pack(x, fmt='hif4', axis=-1) -> PackedWeight`, `unpack(packed) -> float32`: the canonical
  36-byte-per-group HiF4 storage (4.5 bits per value) as an orbax-friendly pytree.
- `QuantLinear` / `quantized_dense`: fake-quantized linear with a straight-through estimator.
- `apply_quantization(model, QuantRule(...))`: swap matching `Linear` layers in place.

Spec: `shared/docs/hif4_format.md`.
"""

from wanjax.quant.formats import FORMATS, fake_quant, fake_quant_ste, get_format
from wanjax.quant.linear import QuantConfig, QuantLinear, SmoothingScale, quantized_dense
from wanjax.quant.packing import BITS_PER_VALUE, PackedWeight, abstract_packed, pack, unpack
from wanjax.quant.rules import QuantizationReport, QuantRule, apply_quantization

__all__ = [
    "BITS_PER_VALUE",
    "FORMATS",
    "PackedWeight",
    "QuantConfig",
    "QuantLinear",
    "QuantRule",
    "QuantizationReport",
    "SmoothingScale",
    "abstract_packed",
    "apply_quantization",
    "fake_quant",
    "fake_quant_ste",
    "get_format",
    "pack",
    "quantized_dense",
    "unpack",
]
