"""SSIM / PSNR against hand-computed cases."""

import numpy as np

from train.calibration import metrics


def test_gaussian_window():
    g = metrics.gaussian_window()
    assert g.shape == (11,) and abs(g.sum() - 1) < 1e-12 and g[5] == g.max()
    np.testing.assert_allclose(g[4] / g[5], np.exp(-1 / (2 * 1.5**2)))


def test_ssim_constant_images_is_the_luminance_term():
    a, b = np.full((1, 1, 12, 12), 0.5), np.full((1, 1, 12, 12), 0.2)
    c1 = (0.01 * 2.0) ** 2  # data range 2 ([-1, 1] frames); variances are 0, so only luminance
    want = (2 * 0.5 * 0.2 + c1) / (0.5**2 + 0.2**2 + c1)
    np.testing.assert_allclose(metrics.ssim(a, b), [want], rtol=1e-12)


def test_ssim_one_window_by_hand():
    """An 11x11 image is one window: weighted moments with the 2-D Gaussian, then the formula."""
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (11, 11))
    b = 0.5 * a + 0.1 + 0.05 * rng.uniform(-1, 1, (11, 11))
    g = metrics.gaussian_window()
    w = np.outer(g, g)
    mu_a, mu_b = (w * a).sum(), (w * b).sum()
    va = (w * a * a).sum() - mu_a**2
    vb = (w * b * b).sum() - mu_b**2
    cov = (w * a * b).sum() - mu_a * mu_b
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    want = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    got = metrics.ssim(a[None, None], b[None, None])
    np.testing.assert_allclose(got, [want], rtol=1e-10)
    assert metrics.ssim(a[None, None], a[None, None])[0] == 1.0


def test_temporal_ssim_and_psnr():
    rng = np.random.default_rng(1)
    still = np.repeat(rng.uniform(-1, 1, (2, 3, 1, 16, 16)), 3, axis=2)
    np.testing.assert_allclose(metrics.temporal_ssim(still), [1.0, 1.0])
    noisy = still + 0.1
    np.testing.assert_allclose(metrics.psnr(noisy, still), 10 * np.log10(4 / 0.01), rtol=1e-6)
    np.testing.assert_allclose(metrics.cosine(noisy, noisy), [1.0, 1.0])
    np.testing.assert_allclose(metrics.relative_error(still, still), [0.0, 0.0])
