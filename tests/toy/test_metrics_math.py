"""The distances and the diversity figure against independent (scipy / brute-force) references."""

import numpy as np
import scipy.linalg
from scipy.stats import wasserstein_distance

from train.toy import metrics


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.5
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    np.testing.assert_allclose(metrics.frechet_distance(a, b), ref, rtol=1e-8)
    assert abs(metrics.frechet_distance(a, a)) < 1e-8


def test_sliced_wasserstein_one_direction_is_plain_w2():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((500, 1)), 2.0 + 0.5 * rng.standard_normal((500, 1))
    # equal sizes: W2 of two 1-D empirical measures pairs the sorted samples
    ref = np.sqrt(np.mean((np.sort(a[:, 0]) - np.sort(b[:, 0])) ** 2))
    np.testing.assert_allclose(metrics.sliced_wasserstein(a, b, num_projections=4), ref, rtol=1e-10)
    # W1 <= W2 (a weaker but independent check via scipy)
    assert wasserstein_distance(a[:, 0], b[:, 0]) <= ref + 1e-12
    assert metrics.sliced_wasserstein(a, a) == 0.0


def test_sliced_wasserstein_grows_with_a_shift_and_is_deterministic():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((300, 3, 2, 4, 4))
    b = rng.standard_normal((300, 3, 2, 4, 4))
    near, far = metrics.sliced_wasserstein(a, b), metrics.sliced_wasserstein(a, b + 0.5)
    assert far > 2 * near and metrics.sliced_wasserstein(a, b) == near


def test_diversity_matches_a_loop():
    rng = np.random.default_rng(3)
    videos = rng.standard_normal((7, 3, 2, 4, 4)).astype(np.float32)
    prompts = ["p", "q", "p", "p", "q", "r", "q"]
    per_prompt = []
    for p in ("p", "q"):
        idx = [i for i, x in enumerate(prompts) if x == p]
        d = [np.sqrt(np.mean((videos[i].astype(np.float64) - videos[j]) ** 2))
             for k, i in enumerate(idx) for j in idx[k + 1:]]
        per_prompt.append(np.mean(d))
    np.testing.assert_allclose(metrics.diversity(videos, prompts), np.mean(per_prompt), rtol=1e-10)


def test_assign_modes_recovers_the_rendered_mode():
    from train.toy import world

    prompts = world.all_prompts() * 3
    modes = np.random.default_rng(4).integers(0, world.NUM_MODES, len(prompts))
    videos = world.render_modes(world.prompt_labels(prompts), modes, world.split_rng("test", 4))
    found, dist = metrics.assign_modes(videos, prompts)
    np.testing.assert_array_equal(found, modes)
    assert dist.max() < metrics.ON_MODE_RMS


def test_mode_tv():
    from train.toy import world

    k = world.NUM_MODES
    assert metrics.mode_tv(np.arange(k).repeat(3)) == 0.0
    np.testing.assert_allclose(metrics.mode_tv(np.zeros(10, int)), 1 - 1 / k)
