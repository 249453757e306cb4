"""Non-finite data is caught before training or attacking, with the batch, feature and example."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_model

import keras_advreg
from keras_advreg.data.validation import check_finite

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def data(n=64, bad=None, value=np.nan):
    rng = np.random.default_rng(0)
    x = rng.random((n, 4)).astype("float32")
    y = (x.sum(1) * 10).astype("int64") % 3
    if bad is not None:
        x[bad] = value
    return x, y


def test_check_finite_names_the_feature_and_the_example():
    x = {"image": np.zeros((4, 2), "float32"), "id": np.array([1, 2, 3, 4])}
    x["image"][2, 1] = np.inf
    with pytest.raises(ValueError, match=r"in features\['image'\], example 12 .*index \(2, 1\)"):
        check_finite(x, None, where="batch 1", offset=10)
    labels = np.array([0.0, np.nan])
    with pytest.raises(ValueError, match=r"nan\) in labels, example 1.*check_finite=False"):
        check_finite(np.zeros((2, 3)), labels)
    check_finite(np.zeros((2, 3)), np.array([1, 2]))  # integers and finite floats pass


@pytest.mark.parametrize("as_dataset", [False, True])
def test_fit_of_the_wrapper_refuses_nan_before_training(as_dataset):
    x, y = data(bad=(5, 2))
    model = keras_advreg.AdversarialRegularization(make_model("sequential"))
    model.compile("sgd", LOSS)
    inputs = (tf.data.Dataset.from_tensor_slices((x, y)).batch(16),) if as_dataset else (x, y)
    with pytest.raises(ValueError, match="non-finite value .*example 5"):
        model.fit(*inputs, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 0  # nothing was trained
    # The opt-out hands the data to Keras, which trains the NaN into the weights.
    model = keras_advreg.AdversarialRegularization(make_model("sequential"), check_finite=False)
    model.compile("sgd", LOSS)
    model.fit(*inputs, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) > 0
    assert not all(np.isfinite(w).all() for w in model.get_weights())


def test_fit_of_an_empty_dataset_is_an_error():
    x, y = data(n=0)
    model = keras_advreg.AdversarialRegularization(make_model("sequential"))
    model.compile("sgd", LOSS)
    with pytest.raises(ValueError, match="`x` is an empty dataset"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)


def test_evaluate_robustness_names_the_batch_and_the_example():
    x, y = data(bad=(37, 0), value=-np.inf)
    model = make_model("sequential")
    with pytest.raises(ValueError, match="batch 1 of `data` .*-inf.*example 37"):
        keras_advreg.evaluate_robustness(model, (x, y), attack="fgsm", batch_size=32, warn=False)
    report = keras_advreg.evaluate_robustness(
        model, (x, y), attack="fgsm", batch_size=32, warn=False, check_finite=False
    )
    assert report.num_examples == 64


def test_the_callback_refuses_nan_validation_data_before_the_first_epoch():
    x, y = data()
    x_val, y_val = data(bad=(0, 0))
    model = make_model("sequential")
    model.compile("sgd", LOSS)
    callback = keras_advreg.AdversarialRobustnessCallback((x_val, y_val), attack="fgsm")
    with pytest.raises(ValueError, match="cannot attack .*non-finite value"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert int(model.optimizer.iterations) == 0
    # The opt-out attacks the data as it is.
    callback = keras_advreg.AdversarialRobustnessCallback(
        (x_val, y_val), attack="fgsm", check_finite=False
    )
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert "val_adv_accuracy" in history.history


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((8, 5), "float32"), np.zeros(8, "int64"), r"Expected examples of shape \(4,\)"),
        (np.zeros((8, 4), "float32"), np.full(8, 3), r"class ids in \[0, 3\) .* from 3 to 3"),
        (np.zeros((8, 4), "float32"), np.full(8, -1), "from -1 to -1"),
    ],
)
def test_fit_of_the_wrapper_refuses_data_that_does_not_fit_the_model(x, y, message):
    model = keras_advreg.AdversarialRegularization(make_model("functional"))
    model.compile("sgd", LOSS)
    with pytest.raises(ValueError, match=message):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 0
