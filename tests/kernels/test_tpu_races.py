"""Acceptance 1 (races): both TPU kernels under the TPU interpreter with race detection on two
simulated TensorCores. The N axis is 'parallel', so the cores split the N tiles; the panel
kernel's M and K axes are sequential on each core, whose VMEM panel is its own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.mosaic.interpret import interpret_pallas_call as tpu_interpreter
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from kernel_refs import assert_within, fresh_rng, matmul_reference, random_packed

from kernels_pallas import BlockSizes, hif4_matmul, to_tiled


@pytest.mark.parametrize(("m", "variant"), [(7, "streaming"), (300, "panel")])
def test_no_races_on_two_cores(m, variant):
    rng, seed = fresh_rng()
    packed = random_packed(rng, 1024, 512)
    x = jnp.asarray(rng.standard_normal((m, 1024)), jnp.bfloat16)
    visits = []

    def record(token, point, core):
        visits.append((tuple(map(int, point)), int(core)))
        return token

    params = pltpu.InterpretParams(
        detect_races=True, on_race="warn", num_cores_or_threads=2, grid_point_recorder=record
    )
    # N tiles of 128: four of them, so each simulated core gets some; panel: M tiles of 128.
    blocks = BlockSizes(block_m=128, block_n=128, block_k=512)
    tpu_interpreter.reset_tpu_interpret_mode_state()
    y = hif4_matmul(x, to_tiled(packed), backend="tpu", interpret=params, block_sizes=blocks)
    y = np.asarray(y)
    assert tpu_interpreter.races is not None and not tpu_interpreter.races.races_found
    ref, bound = matmul_reference(np.asarray(x.astype(jnp.float32)), packed)
    assert_within(y, ref, bound, f"{variant} on 2 cores, seed={seed}")
    cores = {core for _, core in visits}
    assert cores == {0, 1}, f"both simulated cores must run grid points, got {cores}"
    grid_rank = {"streaming": 2, "panel": 3}[variant]
    assert all(len(point) == grid_rank for point, _ in visits)


def test_race_detector_flags_a_shared_output_block():
    """Control: the same set-up does report a race when two cores write one output block."""

    def kernel(x_ref, out_ref):
        out_ref[...] = x_ref[...] * 2

    call = pl.pallas_call(
        kernel, grid=(4,), in_specs=[pl.BlockSpec((8, 128), lambda j: (0, j))],
        out_specs=pl.BlockSpec((8, 128), lambda j: (0, 0)),
        out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
        interpret=pltpu.InterpretParams(detect_races=True, on_race="warn", num_cores_or_threads=2),
    )
    tpu_interpreter.reset_tpu_interpret_mode_state()
    call(jnp.ones((8, 512), jnp.float32)).block_until_ready()
    assert tpu_interpreter.races.races_found
