"""keras_advreg.utils: the backend check every public entry point makes first."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_advreg
from keras_advreg import tuning

X, Y = np.zeros((4, 3), "float32"), np.zeros(4, "int64")


def base():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


ENTRY_POINTS = {
    "AdversarialRegularization": lambda: keras_advreg.AdversarialRegularization(base()),
    "evaluate_robustness": lambda: keras_advreg.evaluate_robustness(base(), (X, Y)),
    "generate_adversarial_examples": lambda: keras_advreg.generate_adversarial_examples(
        base(), X, Y, 0.1
    ),
    "AdversarialRobustnessCallback": lambda: keras_advreg.AdversarialRobustnessCallback((X, Y)),
    "AdversarialExamplesCallback": lambda: keras_advreg.AdversarialExamplesCallback((X, Y), "d"),
    "EpsilonSchedule": lambda: keras_advreg.EpsilonSchedule(0.3),
    "AdversarialHyperModel": lambda: tuning.AdversarialHyperModel(base, loss="mse"),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_entry_point_names_the_backend_it_needs_at_once(name, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError) as info:
        ENTRY_POINTS[name]()
    message = str(info.value)
    assert name in message and "needs the TensorFlow backend of Keras 3" in message
    assert "Set KERAS_BACKEND=tensorflow" in message and "Received: backend='jax'" in message
    assert "\n" not in message
