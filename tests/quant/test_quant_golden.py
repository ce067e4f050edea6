"""Acceptance 1: bit-exact against the reference library's golden outputs (HiF4, NVFP4, MXFP4)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hif4_numpy_ref import GOLDEN, hif4_fake_quant

from wanjax.quant import fake_quant

pytestmark = pytest.mark.skipif(
    not GOLDEN.exists(), reason=f"golden data not found at {GOLDEN} (needs the shared/ folder)"
)
GOLDEN_FORMATS = ("hif4", "nvfp4", "mxfp4")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


def _cases(golden):
    return sorted({k.split("__")[0] for k in golden})


def test_golden_file_has_the_documented_cases(golden):
    assert len(_cases(golden)) == 10
    for case in _cases(golden):
        for fmt in GOLDEN_FORMATS:
            assert golden[f"{case}__{fmt}_lastaxis"].shape == golden[f"{case}__x"].shape


@pytest.mark.parametrize("fmt", GOLDEN_FORMATS)
def test_last_axis_bit_exact(golden, fmt):
    for case in _cases(golden):
        x, want = golden[f"{case}__x"], golden[f"{case}__{fmt}_lastaxis"]
        got = np.asarray(fake_quant(jnp.asarray(x), fmt, axis=-1))
        assert got.dtype == np.float32
        assert np.array_equal(got, want), f"{fmt}/{case}: {np.sum(got != want)} values differ"


@pytest.mark.parametrize("fmt", GOLDEN_FORMATS)
def test_axis0_after_transpose_bit_exact(golden, fmt):
    for case in _cases(golden):
        x, want = golden[f"{case}__x"], golden[f"{case}__{fmt}_lastaxis"]
        got = np.asarray(fake_quant(jnp.asarray(x.T), fmt, axis=0)).T
        assert np.array_equal(got, want), f"{fmt}/{case}: {np.sum(got != want)} values differ"


@pytest.mark.parametrize("fmt", GOLDEN_FORMATS)
def test_bf16_input_bit_exact(golden, fmt):
    """bf16 input is upcast exactly, and every output value fits bf16 again."""
    x, want = golden["bf16_values__x"], golden[f"bf16_values__{fmt}_lastaxis"]
    x_bf16 = jnp.asarray(x, jnp.bfloat16)
    assert np.array_equal(np.asarray(x_bf16, np.float32), x), "case is not on the bf16 grid"
    got = fake_quant(x_bf16, fmt)
    assert got.dtype == jnp.bfloat16
    assert np.array_equal(np.asarray(got, np.float32), want)


def test_bf16_input_of_every_case_matches_the_spec_reference(golden):
    for case in _cases(golden):
        x_bf16 = jnp.asarray(golden[f"{case}__x"], jnp.bfloat16)
        want = hif4_fake_quant(np.asarray(x_bf16, np.float32), axis=-1)
        got = np.asarray(fake_quant(x_bf16, "hif4"), np.float32)
        assert np.array_equal(got, want), case


def test_numpy_reference_agrees_with_golden(golden):
    """Validates the test-side reference that the property tests rely on."""
    for case in _cases(golden):
        got = hif4_fake_quant(golden[f"{case}__x"], axis=-1)
        assert np.array_equal(got, golden[f"{case}__hif4_lastaxis"]), case
