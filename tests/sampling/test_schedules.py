"""Schedules against the official grids (spec §6) and the few-step warps (dmd_notes §1, §4).

The references here are recomputed independently with NumPy along the official precision path:
the float32 training table gives σ_max, `set_timesteps` works in float64, the integer timesteps are
truncated (torch `.to(int64)`), and the solver σ is cast to float32.
"""

import inspect

import numpy as np
import pytest
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from wanjax import sampling

# Spec §6: the 40 integer timesteps of Wan2.2-T2V-A14B (shift 12, 40 steps, UniPC).
A14B_TIMESTEPS = [
    999, 997, 995, 993, 990, 988, 985, 982, 979, 976,
    972, 969, 965, 961, 956, 952, 947, 941, 936, 929,
    922, 915, 907, 898, 888, 877, 865, 852, 837, 819,
    799, 776, 749, 717, 678, 631, 571, 492, 386, 235,
]  # fmt: skip


def official_unipc_grid(num_steps: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """`FlowUniPCMultistepScheduler(shift=1)` + `set_timesteps(N, shift=s)`, step by step."""
    alphas = np.linspace(1, 1 / 1000, 1000)[::-1].copy()
    table = (1.0 - alphas).astype(np.float32)  # torch.from_numpy(...).to(float32); shift 1
    sigma_max, sigma_min = float(table[0]), float(table[-1])  # .item()
    sigmas = np.linspace(sigma_max, sigma_min, num_steps + 1).copy()[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    timesteps = (sigmas * 1000).astype(np.int64)
    return timesteps, np.concatenate([sigmas, [0]]).astype(np.float32)


def official_dpmpp_grid(num_steps: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """`get_sampling_sigmas` + `FlowDPMSolverMultistepScheduler(shift=1).set_timesteps(sigmas=)`."""
    sigmas = np.linspace(1, 0, num_steps + 1)[:num_steps]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    sigmas = 1.0 * sigmas / (1 + (1.0 - 1) * sigmas)  # the scheduler's own shift=1 pass
    timesteps = (sigmas * 1000).astype(np.int64)
    return timesteps, np.concatenate([sigmas, [0]]).astype(np.float32)


def test_a14b_default_timesteps_are_official():
    timesteps, sigmas = sampling.flow_schedule(40, 12.0)
    assert timesteps.dtype == np.int32 and sigmas.dtype == np.float32
    assert timesteps.shape == (40,) and sigmas.shape == (41,)
    assert np.asarray(timesteps).tolist() == A14B_TIMESTEPS
    assert abs(float(sigmas[0]) - 0.9999166) <= 1e-7
    assert float(sigmas[-1]) == 0.0


@pytest.mark.parametrize(
    "num_steps,shift", [(40, 12.0), (50, 5.0), (4, 5.0), (1, 3.0), (100, 12.0)]
)
def test_unipc_grid_matches_numpy_reference(num_steps, shift):
    ref_t, ref_s = official_unipc_grid(num_steps, shift)
    timesteps, sigmas = sampling.flow_schedule(num_steps, shift)
    np.testing.assert_array_equal(np.asarray(timesteps), ref_t)
    assert np.max(np.abs(np.asarray(sigmas, np.float64) - ref_s)) <= 1e-7


def test_diffusers_reproduces_the_official_grid_when_given_it():
    """diffusers' UniPC shifts custom sigmas in the same float64 path: pass the unshifted grid."""
    sched = UniPCMultistepScheduler(
        use_flow_sigmas=True, flow_shift=12.0, prediction_type="flow_prediction"
    )
    sched.set_timesteps(sigmas=np.linspace(sampling.SIGMA_MAX, 0.0, 41)[:-1])
    timesteps, sigmas = sampling.flow_schedule(40, 12.0)
    np.testing.assert_array_equal(sched.sigmas.numpy(), np.asarray(sigmas))
    np.testing.assert_array_equal(sched.timesteps.numpy(), np.asarray(timesteps))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_diffusers_default_flow_grids_differ_from_official():
    """Spec §6 'different' 2: diffusers' own flow grids are not Wan's.

    UniPC: linspace(1, 1/1000) (σ_0 = 1 − 1e-6) instead of linspace(0.999, 0): the last timestep is
    242, not 235. DPM++: diffusers builds flip(shift(1 − linspace(1, 1/1000)))[:-1], which starts at
    shift(0.999) (t_0 = 999), whereas Wan's dpm++ grid starts at σ = 1 (t_0 = 1000); and its
    `set_timesteps` takes no `sigmas`, so the official grid has to be written into it by hand.
    """
    unipc = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=12.0)
    unipc.set_timesteps(40)
    assert int(unipc.timesteps[-1]) == 242 and A14B_TIMESTEPS[-1] == 235

    dpm = DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=12.0)
    dpm.set_timesteps(40)
    official_t, _ = sampling.dpmpp_flow_schedule(40, 12.0)
    assert int(dpm.timesteps[0]) == 999 and int(official_t[0]) == 1000
    assert "sigmas" not in inspect.signature(dpm.set_timesteps).parameters


@pytest.mark.parametrize("num_steps,shift", [(40, 12.0), (50, 5.0), (4, 1.0)])
def test_dpmpp_grid_matches_numpy_reference(num_steps, shift):
    ref_t, ref_s = official_dpmpp_grid(num_steps, shift)
    timesteps, sigmas = sampling.dpmpp_flow_schedule(num_steps, shift)
    np.testing.assert_array_equal(np.asarray(timesteps), ref_t)
    np.testing.assert_array_equal(np.asarray(sigmas), ref_s)
    assert int(timesteps[0]) == 1000 and float(sigmas[0]) == 1.0


def test_a14b_expert_split_is_26_high_then_14_low():
    timesteps, _ = sampling.flow_schedule(40, 12.0)
    high = np.asarray(sampling.expert_split(timesteps, 0.875))
    assert high.sum() == 26 and high[:26].all() and not high[26:].any()
    assert int(timesteps[25]) == 877 and int(timesteps[26]) == 865


def test_warp_timesteps_match_dmd_notes():
    np.testing.assert_allclose(
        np.asarray(sampling.warp_timesteps([1000, 750, 500, 250], 5.0)),
        [1000.0, 937.5, 2500.0 / 3.0, 625.0],
        rtol=1e-7,
    )
    np.testing.assert_allclose(
        np.asarray(sampling.warp_timesteps([1000, 750, 500, 250], 12.0)),
        [1000.0, 973.0, 923.1, 800.0],
        atol=0.05,
    )
    # FastVideo's 8-step Wan2.2 list (dmd_notes §4), and its 4 + 4 expert split.
    fast_video = sampling.warp_timesteps([1000, 850, 700, 550, 350, 275, 200, 125], 12.0)
    np.testing.assert_allclose(
        np.asarray(fast_video), [1000, 985.5, 965.5, 936.2, 866.0, 819.9, 750.0, 631.6], atol=0.05
    )
    assert np.asarray(sampling.expert_split(fast_video, 0.875)).tolist() == [True] * 4 + [False] * 4


def test_few_step_schedule_lightning_2_plus_2():
    timesteps, sigmas = sampling.few_step_schedule([1000, 750, 500, 250], 5.0)
    assert timesteps.dtype == np.float32 and sigmas.shape == (5,)
    np.testing.assert_allclose(np.asarray(sigmas[:-1]), np.asarray(timesteps) / 1000, rtol=1e-7)
    assert float(sigmas[-1]) == 0.0
    high = np.asarray(sampling.expert_split(timesteps, 0.875))
    assert high.tolist() == [True, True, False, False]


@settings(max_examples=50, deadline=None)
@given(
    sigma=st.floats(0.0, 1.0),
    a=st.floats(0.1, 20.0),
    b=st.floats(0.1, 20.0),
)
def test_shift_composes_and_keeps_endpoints(sigma, a, b):
    """shift_b ∘ shift_a = shift_{ab}: the shift is a multiplicative change of the SNR."""
    composed = sampling.shift_sigma(sampling.shift_sigma(sigma, a), b)
    assert composed == pytest.approx(sampling.shift_sigma(sigma, a * b), abs=1e-12)
    assert sampling.shift_sigma(0.0, a) == 0.0
    assert sampling.shift_sigma(1.0, a) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: sampling.flow_schedule(0, 12.0), "num_steps"),
        (lambda: sampling.flow_schedule(2.5, 12.0), "num_steps"),
        (lambda: sampling.flow_schedule(40, 0.0), "shift"),
        (lambda: sampling.dpmpp_flow_schedule(40, -1.0), "shift"),
        (lambda: sampling.flow_schedule(40, 12.0, sigma_max=1.5), "sigma_max"),
        (lambda: sampling.shift_sigma(0.5, 0.0), "shift"),
        (lambda: sampling.warp_timesteps([1001], 5.0), "raw_timesteps"),
        (lambda: sampling.warp_timesteps([], 5.0), "raw_timesteps"),
        (lambda: sampling.warp_timesteps([500, 1000], 5.0), "strictly decreasing"),
        (lambda: sampling.few_step_schedule([1000, 1000], 5.0), "strictly decreasing"),
        (lambda: sampling.few_step_schedule([1000, 0], 5.0), "> 0"),
        (lambda: sampling.expert_split(np.array([900]), 1.5), "boundary"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
