"""keras_advreg.RandomizedSmoothing: Cohen et al.'s CERTIFY and PREDICT, checked against
hand-computed binomial bounds and SciPy, and its errors before any sampling."""

import math
import statistics

import keras
import numpy as np
import pytest

from keras_advreg.certification import RandomizedSmoothing, certify, stats

pytestmark = pytest.mark.backends

PHI_INV = statistics.NormalDist().inv_cdf


def _constant(class_id: int, num_classes: int = 3, dim: int = 2) -> keras.Model:
    """Ignores its input: always `class_id`."""
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(num_classes)])
    bias = np.zeros(num_classes, "float32")
    bias[class_id] = 1.0
    model.set_weights([np.zeros((dim, num_classes), "float32"), bias])
    return model


def _threshold() -> keras.Model:
    """Class 0 iff x_0 > 0 (logits (x_0, -x_0)): under noise, P(class 0) = Phi(x_0 / sigma)."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.set_weights([np.array([[1.0, -1.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32")])
    return model


def test_clopper_pearson_by_hand_and_against_scipy():
    # k = n: P(X >= n) = p^n = alpha, so p_lower = alpha^(1/n).
    assert stats.clopper_pearson_lower(100, 100, 0.001) == pytest.approx(
        0.001 ** (1 / 100), rel=1e-9
    )
    assert stats._lower_bound_numpy(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), rel=1e-12)
    assert stats.clopper_pearson_lower(0, 50, 0.01) == 0.0
    # k = 1: P(X >= 1) = 1 - (1 - p)^n = alpha.
    assert stats._lower_bound_numpy(1, 10, 0.05) == pytest.approx(1 - 0.95 ** (1 / 10), rel=1e-9)
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n, alpha in [(7, 10, 0.05), (980, 1000, 0.001), (99_000, 100_000, 0.001), (3, 5, 0.3)]:
        expected = scipy_stats.beta.ppf(alpha, k, n - k + 1)
        assert stats._lower_bound_numpy(k, n, alpha) == pytest.approx(expected, rel=1e-7)
        assert stats.clopper_pearson_lower(k, n, alpha) == pytest.approx(expected, rel=1e-9)
    for k, n in [(60, 100), (50, 100), (7, 10), (0, 4), (520, 1000)]:
        expected = scipy_stats.binomtest(k, n, 0.5).pvalue
        assert stats.binomial_test_two_sided_half(k, n) == pytest.approx(expected, rel=1e-9)


def test_certify_a_constant_model_by_hand():
    sigma, n, alpha = 0.5, 1000, 0.001
    smoothed = RandomizedSmoothing(
        _constant(2), sigma, batch_size=300
    )  # batches of 300, 300, 300, 100
    labels, radii = smoothed.certify(np.zeros((2, 2), "float32"), n0=10, n=n, alpha=alpha)
    np.testing.assert_array_equal(labels, [2, 2])
    np.testing.assert_allclose(radii, sigma * PHI_INV(alpha ** (1 / n)), rtol=1e-9)


def test_certify_with_known_class_probability():
    sigma, n, alpha = 1.0, 20_000, 0.001
    x0 = sigma * PHI_INV(0.8)  # P(class 0 under noise) = 0.8 exactly
    smoothed = RandomizedSmoothing(_threshold(), sigma, batch_size=5000)
    labels, radii = smoothed.certify(np.array([[x0, 0.0]], "float32"), n0=100, n=n, alpha=alpha)
    assert labels[0] == 0
    # p_lower <= 0.8 unless the binomial count is extreme (probability alpha); the standard
    # error of the count is 0.0028, so p_lower lies above 0.8 - 6 standard errors.
    assert sigma * PHI_INV(0.8 - 6 * 0.0028) < radii[0] <= sigma * PHI_INV(0.8) + 1e-9
    # At the decision boundary (p = 1/2) it abstains.
    labels, radii = smoothed.certify(np.zeros((1, 2), "float32"), n0=100, n=2000, alpha=alpha)
    assert labels[0] == -1 and radii[0] == 0.0
    assert smoothed.predict(np.array([[0.0, 0.0], [3.0, 0.0]], "float32"), n=500)[0] == -1
    assert smoothed.predict(np.array([[3.0, 0.0]], "float32"), n=500)[0] == 0


def test_certified_accuracy_report():
    smoothed = RandomizedSmoothing(_constant(1), 0.25)
    x, y = np.zeros((4, 2), "float32"), np.array([1, 1, 0, 1])
    report = certify(smoothed, (x, y), epsilons=[0.5, 1.0], n0=10, n=500, alpha=0.01)
    radius = 0.25 * PHI_INV(0.01 ** (1 / 500))  # 0.582
    assert report.clean_accuracy == 0.75
    assert report.accuracy == {0.5: 0.75, 1.0: 0.0}
    np.testing.assert_allclose(report.radii, [radius, radius, 0.0, radius])
    assert report.certificate == "randomized-smoothing" and report.abstain_rate == 0.0
    assert "sigma=0.25" in report.description and "n=500" in report.description


def test_errors_before_any_sampling():
    model = _constant(0)
    for sigma in (0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="`sigma` must be a number > 0"):
            RandomizedSmoothing(model, sigma)
    smoothed = RandomizedSmoothing(model, 0.5)
    x = np.zeros((1, 2), "float32")
    with pytest.raises(ValueError, match="`n0`.*<= `n`.*n0=200, n=100"):
        smoothed.certify(x, n0=200, n=100)
    for alpha in (0.0, 1.0, -0.1, 2):
        with pytest.raises(ValueError, match="`alpha` must be a number in \\(0, 1\\)"):
            smoothed.certify(x, n0=10, n=100, alpha=alpha)
        with pytest.raises(ValueError, match="alpha"):
            smoothed.predict(x, alpha=alpha)
    with pytest.raises(ValueError, match="n0"):
        smoothed.certified_accuracy((x, np.array([0])), n0=10, n=5)
    with pytest.raises(ValueError, match="`norm` must be 'l2'"):
        certify(smoothed, (x, np.array([0])), 0.5, norm="l1")
    assert smoothed._forward is None  # nothing was compiled or sampled


def test_training_by_gaussian_noise_layer_is_inactive_at_inference():
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.GaussianNoise(0.5), keras.layers.Dense(2)]
    )
    model.set_weights([np.array([[1.0, -1.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32")])
    labels, radii = RandomizedSmoothing(model, 0.5).certify(
        np.array([[2.0, 0.0]], "float32"), n0=10, n=1000
    )
    # Same as the threshold model without the noise layer: only the wrapper's noise counts.
    expected = RandomizedSmoothing(_threshold(), 0.5).certify(
        np.array([[2.0, 0.0]], "float32"), n0=10, n=1000
    )
    np.testing.assert_array_equal(labels, expected[0])
    np.testing.assert_allclose(radii, expected[1])
    assert math.isfinite(radii[0])
