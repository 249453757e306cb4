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
    "adversarial_loss": lambda: keras_advreg.adversarial_loss(X, Y, base(), loss_fn=None),
}
# What each entry point runs on, and a backend it refuses.
SUPPORTED = {
    "AdversarialRegularization": ("TensorFlow or JAX", "torch"),
    "EpsilonSchedule": ("TensorFlow or JAX", "torch"),
    "evaluate_robustness": ("TensorFlow, JAX or PyTorch", "numpy"),
    "generate_adversarial_examples": ("TensorFlow, JAX or PyTorch", "numpy"),
    "AdversarialRobustnessCallback": ("TensorFlow, JAX or PyTorch", "numpy"),
    "AdversarialExamplesCallback": ("TensorFlow", "jax"),
    "AdversarialHyperModel": ("TensorFlow", "jax"),
    "adversarial_loss": ("TensorFlow", "jax"),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_entry_point_names_the_backend_it_needs_at_once(name, monkeypatch):
    supported, other = SUPPORTED[name]
    monkeypatch.setattr(keras.backend, "backend", lambda: other)
    with pytest.raises(RuntimeError) as info:
        ENTRY_POINTS[name]()
    message = str(info.value)
    assert name in message and f"needs the {supported} backend of Keras 3" in message
    assert "Set KERAS_BACKEND=tensorflow" in message and f"Received: backend='{other}'" in message
    assert "\n" not in message
