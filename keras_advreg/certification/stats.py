"""Exact binomial bounds for randomized smoothing: Clopper-Pearson and the binomial test.

SciPy's are used when SciPy is installed (it is not a dependency of keras_advreg); otherwise
the same quantities are computed exactly here from the binomial tail (bisection on `p`).
"""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=8)
def _log_binomial_coefficients(n: int) -> np.ndarray:
    log_factorial = np.concatenate(
        [[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))]
    )
    return log_factorial[n] - log_factorial - log_factorial[::-1]


def _log_sum_exp(values: np.ndarray) -> float:
    top = float(values.max())
    return top + math.log(float(np.exp(values - top).sum()))


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """`P(X >= k)` for `X ~ Binomial(n, p)`, exactly (in float64)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    ks = np.arange(k, n + 1)
    logs = _log_binomial_coefficients(n)[k:] + ks * math.log(p) + (n - ks) * math.log1p(-p)
    return min(1.0, math.exp(_log_sum_exp(logs)))


def _lower_bound_numpy(k: int, n: int, alpha: float) -> float:
    if k == 0:
        return 0.0
    if k == n:
        return alpha ** (1.0 / n)
    lo, hi = 0.0, k / n  # P(X >= k; p) rises with p; find p with P(X >= k; p) = alpha
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if binomial_upper_tail(k, n, mid) > alpha:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-15:
            break
    return lo  # the lower end: never above the exact bound


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided `(1 - alpha)` Clopper-Pearson lower confidence bound on `p` from `k`
    successes in `n` trials: the `alpha` quantile of `Beta(k, n - k + 1)` (0 for `k = 0`).

    Cohen et al.'s `proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]`.
    """
    if k == 0:
        return 0.0
    try:
        from scipy.stats import beta
    except ImportError:
        return _lower_bound_numpy(k, n, alpha)
    return float(beta.ppf(alpha, k, n - k + 1))


def binomial_test_two_sided_half(k: int, n: int) -> float:
    """The two-sided p-value of `k` successes in `n` trials against `p = 1/2` (SciPy's
    `binomtest(k, n, 0.5).pvalue`)."""
    if n == 0:
        return 1.0
    smaller = min(k, n - k)
    if 2 * smaller == n:
        return 1.0
    # Symmetric: P(X <= smaller) + P(X >= n - smaller) = 2 P(X >= n - smaller).
    return min(1.0, 2.0 * binomial_upper_tail(n - smaller, n, 0.5))


__all__ = ["binomial_test_two_sided_half", "binomial_upper_tail", "clopper_pearson_lower"]
