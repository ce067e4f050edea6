"""`pack_exact`: values already on the HiF4 grid are packed losslessly (re-quantizing is not)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from kernel_refs import fresh_rng, random_weight

from wanjax.quant import fake_quant, pack, unpack
from wanjax.quant.exact_pack import pack_exact


@pytest.mark.parametrize(("shape", "axis"), [((1000, 96), 0), ((40, 130), -1)])
def test_fake_quantized_values_pack_exactly(shape, axis):
    rng, seed = fresh_rng()
    w = random_weight(rng, *shape)
    w[: 64 * 2, :3] *= 2.0**-100  # tiny scales, near E6M2's 2^-48 floor after clipping
    q = np.asarray(fake_quant(jnp.asarray(w), "hif4", axis))
    packed = pack_exact(q, axis=axis)
    assert (packed.shape, packed.axis) == (shape, axis % 2)
    assert np.array_equal(np.asarray(unpack(packed)), q), f"seed={seed}"
    requantized = np.asarray(unpack(pack(jnp.asarray(q), "hif4", axis=axis)))
    assert not np.array_equal(requantized, q), "HiF4 is not idempotent: pack() would change them"


def test_values_off_the_grid_are_refused():
    rng, _ = fresh_rng()
    with pytest.raises(ValueError, match="not HiF4-dequantized"):
        pack_exact(random_weight(rng, 128, 8), axis=0)
    with pytest.raises(ValueError, match="NaN"):
        pack_exact(np.full((64, 2), np.nan, np.float32), axis=0)
