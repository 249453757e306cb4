"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): certified l2 radii by sampling.

The smoothed classifier `g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)` keeps its class
within the l2 radius `sigma * Phi^-1(p_A)` whenever the top class has probability at least
`p_A >= 1/2` under the noise. `certify` estimates a lower confidence bound on `p_A` by
Monte-Carlo (Cohen et al.'s CERTIFY: `n0` samples choose the class, `n` fresh samples bound
its probability with a one-sided Clopper-Pearson interval at level `1 - alpha`), so each
certificate holds with probability at least `1 - alpha`. `predict` is their PREDICT, which
abstains (-1) when a two-sided binomial test cannot separate the top two classes at `alpha`.

The base model `f` should be trained under the same noise: e.g. with
`keras.layers.GaussianNoise(sigma)` as its first layer (active only in training, so at
inference the model sees exactly the noise added here).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import keras
import numpy as np

from keras_advreg.backend import ops as backend_ops
from keras_advreg.certification.report import CertificationReport
from keras_advreg.certification.stats import binomial_test_two_sided_half, clopper_pearson_lower
from keras_advreg.data.batching import batches, model_inputs
from keras_advreg.utils import check_positive_int, is_number

ABSTAIN = -1


def _check_alpha(alpha: Any) -> float:
    if not is_number(alpha) or not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be a number in (0, 1). Received: alpha={alpha!r}")
    return float(alpha)


class RandomizedSmoothing:
    """A classifier smoothed by Gaussian noise, with Monte-Carlo certified l2 radii.

    Args:
        model: A Keras classifier (logits or probabilities; the class is the argmax) with
            one input.
        sigma: float > 0. Standard deviation of the isotropic Gaussian noise, in input units.
        batch_size: int. Noisy copies per forward pass. Defaults to `1000`.
        seed: int. Seed of the host random generator that draws the noise (NumPy): results
            are reproducible and equal across Keras backends. Defaults to `0`.

    Sampling: each forward pass runs `batch_size` noisy copies of one input through the
    model compiled for the backend (`tf.function` / `jax.jit`; PyTorch eagerly); only the
    class ids come back, and they are counted on the host.

    Example:

    >>> import numpy as np
    >>> base = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> base.set_weights([np.array([[1.0, -1.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32")])
    >>> smoothed = RandomizedSmoothing(base, sigma=0.5)
    >>> labels, radii = smoothed.certify(np.array([[2.0, 0.0]], "float32"), n0=100, n=1000, alpha=0.001)
    >>> int(labels[0]), bool(0.5 < radii[0] < 2.0)  # at most the exact 2.0 = sigma * (2 / sigma)
    (0, True)
    """

    def __init__(self, model: Any, sigma: float, batch_size: int = 1000, seed: int = 0):
        if not is_number(sigma) or not 0.0 < sigma < math.inf:
            raise ValueError(f"`sigma` must be a number > 0. Received: sigma={sigma!r}")
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`model` must be a Keras model. Received: model of type {type(model).__name__}"
            )
        self.model = model
        self.sigma = float(sigma)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = int(seed)
        self._forward = None
        self._forward_key = None

    # ----------------------------------------------------------------- sampling
    def _compiled(self, shape: tuple, dtype: str):
        key = (tuple(shape), dtype)
        if self._forward is None or self._forward_key != key:
            model = self.model

            def classes(x, noise):
                logits = model(x + noise, training=False)
                return keras.ops.argmax(logits, axis=-1)

            spec = [
                backend_ops.TensorSpec((1, *shape), dtype),
                backend_ops.TensorSpec((None, *shape), dtype),
            ]
            self._forward = backend_ops.compile(classes, model.variables, spec)
            self._forward_key = key
        return self._forward

    def sample_counts(
        self, x: np.ndarray, num: int, rng: np.random.Generator, batch_size: int | None = None
    ) -> np.ndarray:
        """Class counts of the base model on `num` noisy copies of one input `x`."""
        batch_size = batch_size or self.batch_size
        x = np.asarray(x, dtype=keras.backend.floatx())
        forward = self._compiled(x.shape, x.dtype.name)
        counts: dict[int, int] = {}
        remaining = num
        x1 = x[None]
        while remaining > 0:
            b = min(batch_size, remaining)
            noise = rng.standard_normal((b, *x.shape), dtype=np.float32).astype(x.dtype, copy=False)
            noise *= self.sigma
            ids = np.asarray(keras.ops.convert_to_numpy(forward(x1, noise))).reshape(-1)
            for c, k in zip(*np.unique(ids, return_counts=True)):
                counts[int(c)] = counts.get(int(c), 0) + int(k)
            remaining -= b
        size = max(counts) + 1 if counts else 1
        out = np.zeros(size, dtype=np.int64)
        for c, k in counts.items():
            out[c] = k
        return out

    def _rng(self, seed: int | None) -> np.random.Generator:
        return np.random.default_rng(self.seed if seed is None else seed)

    # ----------------------------------------------------------------- Cohen et al.
    def predict(
        self,
        x: Any,
        n: int = 100,
        alpha: float = 0.001,
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """The smoothed prediction per example, `-1` where it abstains (PREDICT).

        The top two classes of `n` noisy samples are compared by a two-sided binomial test;
        the prediction is returned when its p-value is at most `alpha` (then it differs
        from the smoothed classifier's with probability at most `alpha`).
        """
        n = check_positive_int("n", n)
        alpha = _check_alpha(alpha)
        rng = self._rng(seed)
        out = []
        for xi in np.asarray(x):
            counts = self.sample_counts(xi, n, rng, batch_size)
            order = np.argsort(counts)[::-1]
            top = int(order[0])
            runner_up = int(counts[order[1]]) if len(order) > 1 else 0
            p_value = binomial_test_two_sided_half(int(counts[top]), int(counts[top]) + runner_up)
            out.append(top if p_value <= alpha else ABSTAIN)
        return np.asarray(out, dtype=np.int64)

    def certify(
        self,
        x: Any,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(predictions, radii)`: Cohen et al.'s CERTIFY per example.

        `n0` samples choose the top class `c`; `n` fresh samples count it (`n_c`), and
        `p_lower` is the one-sided `(1 - alpha)` Clopper-Pearson lower bound of `n_c / n`.
        If `p_lower > 1/2` the prediction is `c` with certified l2 radius
        `sigma * Phi^-1(p_lower)`; otherwise it abstains (-1, radius 0).
        """
        n0 = check_positive_int("n0", n0)
        n = check_positive_int("n", n)
        if n0 > n:
            raise ValueError(
                f"`n0` (samples that choose the class) must be <= `n`. Received: n0={n0}, n={n}"
            )
        alpha = _check_alpha(alpha)
        rng = self._rng(seed)
        normal = statistics.NormalDist()
        labels, radii = [], []
        for xi in np.asarray(x):
            top = int(np.argmax(self.sample_counts(xi, n0, rng, batch_size)))
            counts = self.sample_counts(xi, n, rng, batch_size)
            k = int(counts[top]) if top < len(counts) else 0
            p_lower = clopper_pearson_lower(k, n, alpha)
            if p_lower <= 0.5:
                labels.append(ABSTAIN)
                radii.append(0.0)
            else:
                labels.append(top)
                radii.append(self.sigma * normal.inv_cdf(p_lower) if p_lower < 1.0 else math.inf)
        return np.asarray(labels, dtype=np.int64), np.asarray(radii, dtype=np.float64)

    def certified_accuracy(
        self,
        data: Any,
        radii: Any = (0.5, 1.0, 1.5, 2.0),
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int | None = None,
        max_examples: int | None = None,
        label_keys: Any = ("label",),
        seed: int | None = None,
    ) -> CertificationReport:
        """Certified accuracy at l2 `radii` on `(x, y)` data: the fraction of examples whose
        certified prediction is right with a radius above each (abstentions count wrong)."""
        from keras_advreg.certification.lipschitz import _check_epsilons, _labels

        eps = _check_epsilons(radii)
        if check_positive_int("n0", n0) > check_positive_int("n", n):
            raise ValueError(
                f"`n0` (samples that choose the class) must be <= `n`. Received: n0={n0}, n={n}"
            )
        _check_alpha(alpha)
        start = time.time()
        rng_seed = self.seed if seed is None else seed
        predictions, certified, labels = [], [], []
        for i, (x, y) in enumerate(batches(data, 256, label_keys, None, max_examples, self.model)):
            p, r = self.certify(
                model_inputs(self.model, x), n0, n, alpha, batch_size, seed=rng_seed + i
            )
            predictions.append(p)
            certified.append(r)
            labels.append(_labels(y, None))
        predictions, certified, labels = (
            np.concatenate(a) for a in (predictions, certified, labels)
        )
        correct = predictions == labels
        return CertificationReport(
            clean_accuracy=float(correct.mean()),
            accuracy={e: float(np.mean(correct & (certified > e))) for e in eps},
            num_examples=int(len(labels)),
            certificate="randomized-smoothing",
            norm="l2",
            description=(
                f"randomized smoothing (Cohen et al. 2019), sigma={self.sigma:g}, n0={n0}, n={n}, "
                f"alpha={alpha:g} (each certificate holds with probability >= {1 - alpha:g})"
            ),
            config={"sigma": self.sigma, "n0": n0, "n": n, "alpha": alpha},
            abstain_rate=float(np.mean(predictions == ABSTAIN)),
            seconds=time.time() - start,
            radii=np.where(correct, certified, 0.0),
        )


__all__ = ["ABSTAIN", "RandomizedSmoothing"]
