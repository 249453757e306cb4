"""`EmbeddingSpace`: attacks at a model's `AdversarialPerturbation` tensors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_advreg
from keras_advreg.attacks import PGD
from keras_advreg.layers import AdversarialPerturbation, EmbeddingSpace

pytestmark = pytest.mark.backends

W = np.array([[0.8, -0.4], [-0.3, 0.6], [0.5, 0.2]], "float32")  # pooled embedding -> 2 logits
B = np.array([0.05, -0.1], "float32")


def _model():
    """Token ids -> Embedding(mask_zero) -> AdversarialPerturbation -> mean over unmasked
    positions -> Dense(2): linear in the offsets."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((5,), dtype="int32"),
        keras.layers.Embedding(12, 3, mask_zero=True, name="embedding"),
        AdversarialPerturbation(relative=False, name="perturbation"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2, name="logits"),
    ])  # fmt: skip
    model.get_layer("logits").set_weights([W, B])
    return model


def _exact_radius(model, x):
    """Smallest l2 offset that flips each example: the logit margin over the norm of its
    gradient in the offsets, (w0 - w1) / n at each of the n unmasked positions (padding
    never moves the pooled mean), i.e. |margin| * sqrt(n) / ||w0 - w1||."""
    table = keras.ops.convert_to_numpy(model.get_layer("embedding").embeddings)
    n = (x != 0).sum(1)
    pooled = np.stack([table[row[row != 0]].mean(0) for row in x])
    logits = pooled @ W + B
    margin = logits[:, 0] - logits[:, 1]
    return logits.argmax(1), np.abs(margin) * np.sqrt(n) / np.linalg.norm(W[:, 0] - W[:, 1])


def test_an_attack_in_embedding_space_finds_the_exact_minimal_offset():
    model = _model()
    x = np.array([[1, 4, 7, 0, 0], [2, 9, 3, 5, 11], [6, 0, 0, 0, 0], [8, 10, 2, 3, 0]])
    classes, radius = _exact_radius(model, x)
    space = EmbeddingSpace(model)
    features = space.features(x)
    assert features["offsets"]["perturbation"].shape == (4, 5, 3)
    for scale, robust in ((0.97, True), (1.03, False)):
        for i in range(len(x)):
            attack = PGD(float(scale * radius[i]), norm="l2", steps=30)
            one = {
                "inputs": x[i : i + 1],
                "offsets": {"perturbation": features["offsets"]["perturbation"][i : i + 1]},
            }
            report = keras_advreg.evaluate_robustness(
                space, (one, classes[i : i + 1]), attack=attack, warn=False
            )
            assert report.clean_accuracy == 1.0
            assert report.accuracy[attack.epsilons[0]] == float(robust), (i, scale, radius[i])
    assert report.units == "offsets at AdversarialPerturbation 'perturbation' (own units)"
    assert report.config["space"] == report.units
    assert not any("unbounded" in w for w in report.warnings)


def test_embedding_space_round_trips_and_rejects_unsuitable_models(tmp_path):
    model = _model()
    space = EmbeddingSpace(model)
    x = np.array([[1, 4, 7, 0, 0], [2, 9, 3, 5, 11]])
    features = space.features(x)
    before = keras.ops.convert_to_numpy(space(features))
    np.testing.assert_allclose(before, keras.ops.convert_to_numpy(model(x)), rtol=1e-6)
    path = tmp_path / "space.keras"
    space.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, EmbeddingSpace) and restored.layer_names == ["perturbation"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(features)), before, rtol=1e-6)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="needs a model with an `AdversarialPerturbation`"):
        EmbeddingSpace(plain)
    floats = keras.Sequential([keras.Input((3,)), AdversarialPerturbation(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="floating-point inputs"):
        EmbeddingSpace(floats)
