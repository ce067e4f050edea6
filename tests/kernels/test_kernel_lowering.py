"""Acceptance 2: at production shapes (shape structs only, nothing allocated), the TPU kernels
export for 'tpu' and the GPU kernels lower for 'cuda' on an abstract H100, from this CPU host.

Each check asserts the Pallas custom call in the lowered module. Mosaic's own compiler passes and
Triton's PTX compilation run only on the device and are not covered here.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import pytest
from jax import export
from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh

from kernels_pallas import BlockSizes, abstract_tiled, hif4_matmul
from kernels_pallas.blocks import tpu_blocks

pytestmark = pytest.mark.filterwarnings(  # jax 0.12 announces Mosaic GPU as Triton's successor
    "ignore:The Pallas Triton backend is deprecated:DeprecationWarning"
)
TPU_CALL = "tpu_custom_call"
TRITON_CALL = "__gpu$xla.gpu.triton"
H100 = AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="gpu")
SHAPES = list(itertools.product((75_600, 64, 1), (5120, 13824), (5120, 13824)))  # M, K, N


def _structs(m, k, n):
    return jax.ShapeDtypeStruct((m, k), jnp.bfloat16), abstract_tiled((k, n))


def _export_tpu(fn, m, k, n) -> str:
    return export.export(jax.jit(fn), platforms=["tpu"])(*_structs(m, k, n)).mlir_module()


def _lower_cuda(fn, m, k, n) -> str:
    with use_abstract_mesh(AbstractMesh((1,), ("x",), abstract_device=H100)):
        lowered = jax.jit(fn).trace(*_structs(m, k, n)).lower(lowering_platforms=("cuda",))
    return lowered.as_text()


@pytest.mark.parametrize(("m", "k", "n"), SHAPES)
def test_tpu_kernel_exports_for_tpu(m, k, n):
    text = _export_tpu(lambda x, w: hif4_matmul(x, w, backend="tpu"), m, k, n)
    assert TPU_CALL in text
    variant = "streaming" if m <= 256 else "panel"
    assert f"hif4_matmul_tpu_{variant}" in text


@pytest.mark.parametrize(("m", "k", "n"), SHAPES)
def test_gpu_kernel_lowers_for_cuda(m, k, n):
    text = _lower_cuda(lambda x, w: hif4_matmul(x, w, backend="gpu"), m, k, n)
    assert TRITON_CALL in text
    assert ("hif4_matmul_gpu_fused" if m <= 64 else "hif4_dequantize_gpu") in text


@pytest.mark.parametrize("m", [75_600, 64])
def test_gpu_fused_kernel_lowers_at_large_m(m):
    """The fused Triton kernel also lowers at large M (for measuring against dequant + matmul)."""
    blocks = BlockSizes(small_m=10**6, block_m=128, block_n=128)
    text = _lower_cuda(
        lambda x, w: hif4_matmul(x, w, backend="gpu", block_sizes=blocks), m, 5120, 13824
    )
    assert "hif4_matmul_gpu_fused" in text


def test_tpu_panel_kernel_at_small_m_exports():
    text = _export_tpu(
        lambda x, w: hif4_matmul(x, w, backend="tpu", block_sizes=BlockSizes(small_m=0)),
        64, 13824, 5120,
    )
    assert "hif4_matmul_tpu_panel" in text


@pytest.mark.parametrize("m", [75_600, 1])
def test_auto_picks_the_platform_kernel(m):
    """'auto' lowers only the branch of the target platform: Mosaic for TPU, Triton for CUDA,
    the jnp reference (a plain dot, no custom call) for CPU."""
    def auto(x, w):
        return hif4_matmul(x, w)

    tpu_text = _export_tpu(auto, m, 5120, 13824)
    assert TPU_CALL in tpu_text and TRITON_CALL not in tpu_text
    cuda_text = _lower_cuda(auto, m, 5120, 13824)
    assert TRITON_CALL in cuda_text and TPU_CALL not in cuda_text
    cpu_text = jax.jit(auto).trace(*_structs(m, 5120, 13824)).lower().as_text()
    assert TPU_CALL not in cpu_text and TRITON_CALL not in cpu_text and "dot_general" in cpu_text


@pytest.mark.parametrize(("kind", "block_n"), [("TPU v5 lite", 256), ("TPU v6 lite", 512)])
def test_tpu_blocks_follow_the_targeted_chip(kind, block_n):
    """Chip info comes from the abstract device when lowering ahead of time: v5e's 128-wide MXU
    gets 256-wide panels, v6e's 256-wide MXU 512-wide ones (K = 13824 fits either in VMEM)."""
    chip = AbstractDevice(device_kind=kind, num_cores=1, platform="tpu")
    with use_abstract_mesh(AbstractMesh((1,), ("x",), abstract_device=chip)):
        blocks = tpu_blocks(75_600, 13824, 5120, jnp.bfloat16)
        text = _export_tpu(lambda x, w: hif4_matmul(x, w, backend="tpu"), 75_600, 13824, 5120)
    assert blocks.block_n == block_n and blocks.vmem_limit_bytes <= 0.9 * 128 * 2**20
    assert TPU_CALL in text
