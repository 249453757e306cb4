"""Randomized models: the randomness check, expectation over transformation (EOT), `rand`.

The EOT gradient is checked against a model whose randomness is known: each feature is
scaled by an independent U(0, 2) draw, then summed (the first logit), so the input
gradient of one pass is the draw itself, and the mean of `k` passes has expectation 1 and
variance 1 / (3k) per feature - unless the draws repeat, when it stays 1 / 3.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from keras_advreg import attacks, evaluate_robustness
from keras_advreg.attacks.problem import get_problem
from keras_advreg.backend import ops as backend_ops
from keras_advreg.evaluation.checks import randomness

pytestmark = pytest.mark.backends

ROWS, FEATURES, CLASSES = 128, 8, 4


class RandomScale(keras.layers.Layer):
    """x * u, u ~ U(0, 2) per element, at inference too."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x):
        return x * keras.random.uniform(keras.ops.shape(x), 0.0, 2.0, seed=self.generator)


def _model(random=True):
    layers = [keras.Input((FEATURES,))] + ([RandomScale(seed=1)] if random else [])
    model = keras.Sequential([*layers, keras.layers.Dense(CLASSES)])
    kernel = np.zeros((FEATURES, CLASSES), "float32")
    kernel[:, 0] = 1.0  # logit 0 = the sum of the (scaled) features
    kernel[:, 1:] = np.random.default_rng(0).normal(size=(FEATURES, CLASSES - 1)) * 0.1
    model.set_weights([kernel, np.zeros(CLASSES, "float32")])
    return model


def _gradients(model, draws, calls=1):
    x = np.random.default_rng(1).random((ROWS, FEATURES), dtype=np.float32)
    y = np.zeros(ROWS, "int64")
    problem = get_problem(model, x, y, None, None, None)

    def gradient(x):
        v = problem.flatten(x)
        _, _, grad = problem.value_and_grad(x, v, lambda s: s[:, 0], draws=draws)
        return grad

    compiled = backend_ops.compile(gradient, model.variables)
    return [np.asarray(backend_ops.to_numpy(compiled(x))) for _ in range(calls)]


@pytest.mark.parametrize("draws", [1, 20])
def test_eot_gradient_is_the_mean_of_independent_draws(draws):
    (grad,) = _gradients(_model(), draws)
    # Mean 1 (5 standard errors: 5 * sqrt(1 / (3 * draws * 1024))); variance 1 / (3 draws)
    # (5 standard errors of a sample variance: 5 * sqrt(2 / 1024) of it).
    assert grad.mean() == pytest.approx(1.0, abs=5 * np.sqrt(1 / (3 * draws * grad.size)))
    expected = 1 / (3 * draws)
    assert grad.var() == pytest.approx(expected, rel=5 * np.sqrt(2 / grad.size))
    assert grad.min() >= 0 and grad.max() <= 2


def test_each_compiled_call_draws_anew():
    first, second = _gradients(_model(), 1, calls=2)
    assert not np.allclose(first, second)


def test_the_randomness_check_tells_random_from_deterministic_models():
    x = np.random.default_rng(2).random((40, FEATURES), dtype=np.float32)
    seen = []
    found = randomness(lambda x: seen.append(len(x)) or _model(random=False)(x, training=False), x)
    assert seen == [16] * 5 and found["examples"] == 16  # 5 passes on the first 16 examples
    assert not found["randomized"] and found["max_difference"] == 0.0
    noisy = _model()
    found = randomness(lambda x: noisy(x, training=False), x)
    assert found["randomized"] and found["max_difference"] > 0.01 and found["passes"] == 5


def test_the_rand_version_and_eot_counts():
    rand = attacks.AutoAttack(0.3, version="rand", restarts=5)
    assert rand.describe() == "AutoAttack-rand (APGD-CE-100-EOT20, APGD-DLR-100-EOT20)"
    assert [m.restarts for m in rand.members()] == [1, 1]  # the reference runs each once
    assert attacks.get("autoattack-rand") == attacks.AutoAttack(version="rand")
    assert attacks.AutoAttack(version="rand", eot_iter=5).members()[0].eot_iter == 5
    assert attacks.AutoAttack().members()[0].eot_iter == 1
    again = attacks.deserialize(attacks.serialize(rand))
    assert again == rand and again.describe() == rand.describe()
    for make in (
        lambda e: attacks.APGD(eot_iter=e),
        lambda e: attacks.APGDTargeted(eot_iter=e),
        lambda e: attacks.AutoAttack(version="rand", eot_iter=e),
    ):
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match="`eot_iter` must be an integer >= 1"):
                make(bad)


def _xy():
    x = np.random.default_rng(3).random((8, FEATURES), dtype=np.float32)
    return x, np.zeros(8, "int64")


@pytest.mark.slow
def test_a_randomized_model_is_attacked_with_eot_and_said_so():
    attack = attacks.AutoAttack(0.1, steps=2, eot_iter=3, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate_robustness(_model(), _xy(), attack=attack)
    assert report.description == "AutoAttack-rand (APGD-CE-2-EOT3, APGD-DLR-2-EOT3)"
    message = report.warnings[0]
    assert message.startswith("The model is randomized: 5 forward passes on the same 8 examples")
    assert "mean over 3 draws" in message and message in [str(w.message) for w in caught]
    assert report.config["randomness_check"]["randomized"]


@pytest.mark.slow
def test_rand_on_a_deterministic_model_warns_and_runs():
    attack = attacks.AutoAttack(0.1, version="rand", steps=2, eot_iter=2, seed=0)
    with pytest.warns(UserWarning, match="is meant for randomized models, but 5 forward passes"):
        report = evaluate_robustness(_model(random=False), _xy(), attack=attack)
    assert report.description == "AutoAttack-rand (APGD-CE-2-EOT2, APGD-DLR-2-EOT2)"


def test_a_deterministic_model_is_not_told_anything():
    # Bounded (the data lie in [0, 1)), so that an unbounded attack's warning is not raised.
    attack = attacks.APGD(0.1, steps=2, seed=0, clip_value_min=0.0, clip_value_max=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = evaluate_robustness(_model(random=False), _xy(), attack=attack)
    assert report.description == "APGD-CE-2" and "randomness_check" not in report.config
