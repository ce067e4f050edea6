"""The metrics separate real renders from blurred, mode-averaged or wrong samples.

Uses the committed classifier (train/toy/assets/classifier). The degraded sets are built here
from real renders, independently of the classifier's own training negatives where possible.
"""

import numpy as np
import pytest

from train.toy import metrics, world
from train.toy.data import eval_prompts

PER_PROMPT = 8


@pytest.fixture(scope="module")
def prompts():
    return eval_prompts(PER_PROMPT)


@pytest.fixture(scope="module")
def floor(prompts):
    return metrics.real_floor(prompts)


def _draws(prompts, n, seed=0):
    return [world.render(prompts, world.split_rng("test", seed, i)) for i in range(n)]


def test_real_second_draw_is_the_floor(floor):
    assert floor["prompt_acc"] >= 0.97
    assert floor["real_rate"] >= 0.98
    assert 0.8 < floor["diversity"] / floor["diversity_real"] < 1.25


def test_mode_average_fails(prompts, floor):
    """The conditional mean (what a one-step flow sampler outputs) is a blurred blob."""
    mean = np.mean(_draws(prompts, 16), axis=0)
    row = metrics.evaluate_samples(mean, prompts)
    assert row["prompt_acc"] < 0.2 and row["real_rate"] < 0.2
    assert row["fd"] > 20 * max(floor["fd"], 1e-3)
    assert row["swd"] > 2 * floor["swd"]
    assert row["diversity"] < 0.5 * floor["diversity"]


def test_blur_fails(prompts, floor):
    from train.toy.classifier import gaussian_blur

    real = _draws(prompts, 1)[0]
    row = metrics.evaluate_samples(gaussian_blur(real, np.full(len(real), 1.2, np.float32)), prompts)
    assert row["real_rate"] < 0.2 and row["fd"] > 10 * max(floor["fd"], 1e-3)


def test_wrong_prompts_fail(prompts, floor):
    """Sharp, real-looking videos of other prompts: accuracy drops, realness does not."""
    shuffled = list(np.random.default_rng(0).permutation(prompts))
    row = metrics.evaluate_samples(world.render(shuffled, world.split_rng("test", 9)), prompts)
    assert row["real_rate"] >= 0.95 and row["prompt_acc"] < 0.1
    # the same sharp renders scored against their own prompts are fine
    ok = metrics.evaluate_samples(world.render(shuffled, world.split_rng("test", 9)), shuffled)
    assert ok["prompt_acc"] >= 0.97


def test_mode_collapse_shows_in_diversity(prompts, floor):
    """Every sample of a prompt identical: accurate and sharp, but no diversity."""
    unique = world.all_prompts()
    one = world.render(unique, world.split_rng("test", 3))
    collapsed = np.repeat(one, PER_PROMPT, axis=0)
    row = metrics.evaluate_samples(collapsed, prompts)
    assert row["prompt_acc"] >= 0.95 and row["diversity"] < 1e-6  # (float64 rounding)
    assert row["fd"] > 3 * max(floor["fd"], 1e-3)


def test_rejects_bad_shapes(prompts):
    with pytest.raises(ValueError, match="expected videos"):
        metrics.evaluate_samples(np.zeros((3, 3, 4, 16, 16)), prompts)


def test_clipped_scoring_leaves_real_renders_alone_and_cuts_overshoot(prompts):
    real = metrics.real_videos(prompts)
    assert real.min() >= -1.0 and real.max() <= 1.0  # so clipping changes samples only
    np.testing.assert_array_equal(metrics.scored_as("clipped", real), real)
    over = metrics.scored_as("clipped", 1.3 * real)
    assert over.min() == -1.0 and over.max() == 1.0
    np.testing.assert_array_equal(metrics.scored_as("raw", 1.3 * real), (1.3 * real).astype(np.float32))
    with pytest.raises(ValueError, match="scoring"):
        metrics.scored_as("uint8", real)
