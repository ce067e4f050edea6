"""Block sizes for the HiF4 kernels, chosen from chip info, with explicit overrides.

TPU: `pltpu.get_tpu_info()` (MXU width, VMEM per core); GPU: the compute capability from the
device kind (Hopper and newer get deeper pipelines and wider tiles). Both read the local device,
or, when lowering ahead of time from another host, the abstract device of the enclosing
`jax.sharding.use_abstract_mesh`; with neither, TPU sizes assume 64 MiB VMEM and a 256-wide MXU.

Every K tile is a multiple of 512 (one word-tile chunk) and divides the padded K; every N tile is
a multiple of 128 dividing the padded N (see `layout`), so no weight block is ever partial. Only M
may end in a partial block, whose extra rows are never written back.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

from kernels_pallas.layout import CHUNK, LANES

TPU_SMALL_M = 256  # at or below: the fused streaming kernel; above: the cached-panel kernel
GPU_SMALL_M = 64  # at or below: the fused Triton kernel; above: dequantize, then XLA's matmul
DEFAULT_TPU_VMEM = 64 * 2**20  # v5p / v7x per-core VMEM, the smallest of the current chips
DEFAULT_TPU_MXU = 256


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes and variant switch; a field left None is chosen from the chip.

    `small_m`: the largest M that runs the fused small-M kernel. `vmem_limit_bytes` is TPU only,
    `num_warps` / `num_stages` GPU only.
    """

    block_m: int | None = None
    block_n: int | None = None
    block_k: int | None = None
    small_m: int | None = None
    vmem_limit_bytes: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None

    def merged(self, defaults: BlockSizes) -> BlockSizes:
        """These sizes, with None fields taken from `defaults`."""
        return BlockSizes(**{
            f.name: getattr(defaults, f.name) if getattr(self, f.name) is None
            else getattr(self, f.name)
            for f in dataclasses.fields(self)
        })


def _largest_divisor(total: int, candidates: tuple[int, ...]) -> int:
    return next(c for c in candidates if total % c == 0)


def tpu_info():
    """`TpuInfo` of the targeted TPU (local or abstract device), or None if it is not a TPU."""
    try:
        return pltpu.get_tpu_info()
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        return None


def tpu_blocks(
    m: int, k_pad: int, n_pad: int, dtype, overrides: BlockSizes | None = None
) -> BlockSizes:
    """Blocks for the TPU kernels. Small M: large K and N tiles (few grid steps, the weight is
    read once anyway). Large M: MXU-wide N tiles and a whole `[K, block_n]` dequantized panel
    kept in VMEM, sized to a quarter of the core's VMEM."""
    info = tpu_info()
    vmem = info.vmem_capacity_bytes if info else DEFAULT_TPU_VMEM
    mxu = info.mxu_column_size if info else DEFAULT_TPU_MXU
    overrides = overrides or BlockSizes()
    small_m = overrides.small_m if overrides.small_m is not None else TPU_SMALL_M
    itemsize = jnp.dtype(dtype).itemsize
    if m <= small_m:
        bm, bk = m, _largest_divisor(k_pad, (2048, 1024, CHUNK))
        bn = _largest_divisor(n_pad, (512, 256, LANES))
    else:
        bm, bk = 512, _largest_divisor(k_pad, (1024, CHUNK))
        fits = [c for c in (2 * mxu, mxu, LANES) if k_pad * c * itemsize <= vmem // 4]
        bn = _largest_divisor(n_pad, (*fits, LANES))
    chosen = overrides.merged(BlockSizes(block_m=bm, block_n=bn, block_k=bk, small_m=small_m))
    limit = chosen.vmem_limit_bytes or min(
        int(0.9 * vmem), max(32 * 2**20, 2 * tpu_vmem_bytes(m, k_pad, chosen, dtype))
    )
    chosen = dataclasses.replace(chosen, vmem_limit_bytes=limit)
    check_blocks(chosen, k_pad, n_pad, "tpu")
    return chosen


def tpu_vmem_bytes(m: int, k_pad: int, blocks: BlockSizes, dtype) -> int:
    """VMEM the chosen TPU kernel needs: double-buffered blocks, accumulator, dequantized tile(s)."""
    bm, bn, bk = min(m, blocks.block_m), blocks.block_n, blocks.block_k
    itemsize = jnp.dtype(dtype).itemsize
    dequantized = (bk if m <= blocks.small_m else k_pad) * bn * itemsize
    packed = 2 * (bk // 8 + bk // 64) * bn * 4
    return dequantized + packed + 2 * bm * bk * itemsize + 3 * bm * bn * 4


def gpu_compute_capability() -> int:
    """Compute capability of the (possibly abstract) GPU being targeted; 0 if unknown."""
    try:
        return plgpu.get_gpu_info().compute_capability
    except (ValueError, RuntimeError, AttributeError):
        return 0


def gpu_blocks(
    m: int, k_pad: int, n_pad: int, dtype, overrides: BlockSizes | None = None
) -> BlockSizes:
    """Blocks for the Triton kernels. Small M: the fewest rows a Triton dot takes (16) up to 64,
    and narrow N tiles so that N / block_n programs fill the SMs. Large M: 128-wide tiles for
    the dequantize kernel (XLA's cuBLAS matmul then does the product)."""
    del dtype
    overrides = overrides or BlockSizes()
    small_m = overrides.small_m if overrides.small_m is not None else GPU_SMALL_M
    hopper = gpu_compute_capability() >= 90
    if m <= small_m:
        bm = min(max(16, 1 << (max(m, 1) - 1).bit_length()), 64)
        bn = 64 if n_pad >= 64 * 64 else LANES
    else:
        bm, bn = (128 if hopper else 64), LANES
    chosen = overrides.merged(BlockSizes(
        block_m=bm, block_n=bn, block_k=CHUNK, small_m=small_m,
        num_warps=4 if m <= small_m else 8, num_stages=3 if hopper else 2,
    ))
    check_blocks(chosen, k_pad, n_pad, "gpu")
    return chosen


def check_blocks(blocks: BlockSizes, k_pad: int, n_pad: int, backend: str) -> None:
    """ValueError for tile sizes the kernels cannot use."""
    bm, bn, bk = blocks.block_m, blocks.block_n, blocks.block_k
    if bk % CHUNK or k_pad % bk:
        raise ValueError(f"block_k {bk} must be a multiple of {CHUNK} dividing the padded K {k_pad}")
    if backend == "gpu":
        if bn & (bn - 1) or n_pad % bn or bn < 16:
            raise ValueError(f"block_n {bn} must be a power of two >= 16 dividing N_pad {n_pad}")
        if bm & (bm - 1) or bm < 16:
            raise ValueError(f"block_m {bm} must be a power of two >= 16 (Triton dot)")
        if bk != CHUNK:
            raise ValueError(f"the Triton kernels step K by {CHUNK}; got block_k {bk}")
    else:
        if bn % LANES or n_pad % bn:
            raise ValueError(f"block_n {bn} must be a multiple of {LANES} dividing N_pad {n_pad}")
        if bm < 1:
            raise ValueError(f"block_m must be positive, got {bm}")
