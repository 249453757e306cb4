"""Inputs that would give a wrong number quietly are refused before any attack runs:
features and labels of different lengths, models that are not classifiers (regression,
several outputs, not a model at all). Multi-input models are supported: checked against
robust accuracies worked out by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_advreg
from keras_advreg.data.validation import check_classifier, check_example_counts
from keras_advreg.evaluation import evaluate as evaluate_module

RNG = np.random.default_rng(0)
X = RNG.random((128, 4), dtype="float32")
Y = RNG.integers(0, 3, 128)


def classifier(outputs=3):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(outputs)])


@pytest.fixture
def no_attack(monkeypatch):
    """Fails the test if an attack is prepared: the checks must come first."""

    def fail(*args, **kwargs):
        raise AssertionError("an attack was prepared before the input was refused")

    monkeypatch.setattr(evaluate_module, "prepare", fail)


# --------------------------------------------------------------------------- example counts
@pytest.mark.parametrize(
    "data",
    [
        (X, Y[:100]),
        ({"x": X, "label": Y[:100]}, None),
        (tf.data.Dataset.from_tensors((X, Y[:100])), None),
    ],
    ids=["arrays", "dict", "dataset"],
)
def test_fewer_labels_than_examples_is_an_error(data, no_attack):
    data = data[0] if data[1] is None else data
    with pytest.raises(ValueError, match="holds 128 examples but 100 labels"):
        keras_advreg.evaluate_robustness(classifier(), data, attack="fgsm", warn=False)


def test_max_examples_does_not_hide_a_count_mismatch(no_attack):
    with pytest.raises(ValueError, match="128 examples but 100 labels"):
        keras_advreg.evaluate_robustness(
            classifier(), (X, Y[:100]), attack="fgsm", max_examples=50, warn=False
        )


def test_check_example_counts_names_each_feature():
    check_example_counts({"a": X, "b": X}, Y)  # equal counts pass
    with pytest.raises(ValueError, match="128 / 64 examples but 128 labels"):
        check_example_counts({"a": X, "b": X[:64]}, Y)


def test_the_callback_refuses_a_count_mismatch_before_training():
    model = classifier()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    callback = keras_advreg.AdversarialRobustnessCallback((X, Y[:100]), attack="fgsm")
    with pytest.raises(ValueError, match="128 examples but 100 labels"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[callback])
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)  # refused before the first training step


# --------------------------------------------------------------------------- not a classifier
@pytest.mark.parametrize("loss", ["mse", "mean_absolute_error", keras.losses.Huber()])
def test_a_model_compiled_for_regression_is_refused(loss, no_attack):
    model = classifier(1)
    model.compile("adam", loss)
    y = RNG.random(128).astype("float32")
    with pytest.raises(ValueError, match="needs a classifier with class logits or probabilities"):
        keras_advreg.evaluate_robustness(model, (X, y), attack="fgsm", warn=False)


@pytest.mark.parametrize("labels", [RNG.random(128).astype("float32"), RNG.integers(0, 5, 128)])
def test_regression_targets_for_one_output_unit_are_refused(labels):
    with pytest.raises(ValueError, match="needs a classifier with class logits or probabilities"):
        keras_advreg.evaluate_robustness(classifier(1), (X, labels), attack="fgsm", warn=False)


def test_a_binary_logit_model_is_still_a_classifier():
    # One logit z = x0 - 0.5: class 1 when x0 > 0.5. The l-inf distance to the boundary is
    # |x0 - 0.5|: at epsilon 0.1 exactly the correct examples with |x0 - 0.5| > 0.1 survive.
    model = classifier(1)
    model.set_weights([np.array([[1.0], [0.0], [0.0], [0.0]], "float32"), np.array([-0.5])])
    y = (X[:, 0] > 0.5).astype("int64")
    y[:10] = 1 - y[:10]  # ten misclassified examples
    report = keras_advreg.evaluate_robustness(
        model, (X, y), epsilons=0.1, attack="fgsm", warn=False
    )
    correct = np.arange(128) >= 10
    assert report.clean_accuracy == pytest.approx(correct.mean())
    expected = np.mean(correct & (np.abs(X[:, 0] - 0.5) > 0.1))
    assert report.accuracy[0.1] == pytest.approx(expected)


@pytest.mark.parametrize(
    "model, kind",
    [(X, "numpy.ndarray"), ("model.keras", "str"), ({"weights": X}, "dict")],
)
def test_a_non_model_is_named_by_its_type_not_printed(model, kind, no_attack):
    with pytest.raises(TypeError) as error:
        keras_advreg.evaluate_robustness(model, (X, Y), attack="fgsm", warn=False)
    message = str(error.value)
    assert f"model of type {kind}" in message
    assert "0." not in message and len(message) < 200  # no array printed


def test_a_path_gets_a_hint_to_load_it():
    with pytest.raises(TypeError, match="keras.models.load_model"):
        check_classifier("model.keras")


def test_several_outputs_are_refused_with_what_to_do(no_attack):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(3)(inputs)])
    with pytest.raises(ValueError, match=r"2 outputs.*model\.outputs\[0\]"):
        keras_advreg.evaluate_robustness(model, (X, Y), attack="fgsm", warn=False)


# --------------------------------------------------------------------------- several inputs
def two_input_model(named: bool):
    a = keras.Input((1,), name="a" if named else None)
    b = keras.Input((1,), name="b" if named else None)
    dense = keras.layers.Dense(2)
    outputs = dense(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b} if named else [a, b], outputs)
    # z0 - z1 = 2 (a + b): class 0 when a + b > 0. FGSM (l-inf) moves both inputs by eps,
    # so an example flips once 2 eps > |a + b|, half the radius needed if only one moved.
    dense.set_weights([np.array([[1.0, -1.0], [1.0, -1.0]], "float32"), np.zeros(2, "float32")])
    return model


A = np.array([[0.1], [0.3], [-0.2]], "float32")
B = np.array([[0.1], [0.3], [0.1]], "float32")
LABELS = np.array([0, 0, 1])  # |a + b| = 0.2, 0.6, 0.1: flipped above eps 0.1, 0.3, 0.05
EXPECTED = {0.04: 1.0, 0.08: 2 / 3, 0.2: 1 / 3, 0.4: 0.0}


@pytest.mark.parametrize("named", [False, True], ids=["list", "dict"])
def test_a_two_input_model_is_attacked_in_both_inputs(named):
    features = {"a": A, "b": B} if named else [A, B]
    report = keras_advreg.evaluate_robustness(
        two_input_model(named),
        (features, LABELS),
        epsilons=tuple(EXPECTED),
        attack="fgsm",
        warn=not named,  # the list model also runs the comparison with APGD-CE
    )
    assert report.clean_accuracy == 1.0
    assert report.accuracy == pytest.approx(EXPECTED)


# --------------------------------------------------------------------------- the callback's keys
def test_the_callback_says_what_made_each_key_and_on_which_examples(capsys):
    model = classifier()
    model.compile(
        keras.optimizers.SGD(0.0),  # weights unchanged: the expectations below hold
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = keras_advreg.AdversarialRobustnessCallback(
        (X, Y), epsilons=(0.1, 0.2), attack="pgd", max_examples=32, verbose=1
    )
    history = model.fit(X, Y, validation_data=(X, Y), epochs=1, verbose=0, callbacks=[callback])
    logs = {k: v[-1] for k, v in history.history.items()}
    assert all(isinstance(v, float) for v in logs.values())  # numbers only, as Keras expects
    predictions = np.argmax(model.predict(X, verbose=0), axis=1)
    assert logs["val_clean_accuracy"] == pytest.approx(np.mean(predictions[:32] == Y[:32]))
    assert logs["val_accuracy"] == pytest.approx(np.mean(predictions == Y))
    descriptions = callback.descriptions
    assert set(descriptions) == set(callback.log_keys)
    assert descriptions["val_adv_accuracy"].startswith("accuracy under PGD")
    assert "epsilon 0.1" in descriptions["val_adv_accuracy"]
    assert "epsilon 0.2" in descriptions["val_adv_accuracy_eps_0.2"]
    assert "first 32 examples" in descriptions["val_clean_accuracy"]
    printed = capsys.readouterr().out
    assert f"val_clean_accuracy: {descriptions['val_clean_accuracy']}" in printed
