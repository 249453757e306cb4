"""AdversarialRobustnessCallback in real fits: logs, EarlyStopping, CSVLogger, deepcopy, errors."""

from __future__ import annotations

import copy
import csv
import glob
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import MODEL_KINDS, make_model, small_mnist_cnn

from keras_advreg.attacks import FGSM, PGD
from keras_advreg.callbacks import AdversarialRobustnessCallback


def tiny_data(n=96, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4)).astype("float32")
    return x, (x.sum(1) * 10).astype("int64") % num_classes


def compiled(kind="sequential", **kwargs):
    model = make_model(kind, **kwargs)
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


def inline_fgsm_accuracy(model, x, y, eps, clip=True):
    """Independent white-box FGSM (l-inf, clipped to [0, 1] with `clip`) accuracy."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
    x_adv = x + eps * tf.sign(tape.gradient(loss, x))
    x_adv = tf.clip_by_value(x_adv, 0.0, 1.0) if clip else x_adv
    return float(np.mean(np.argmax(model(x_adv), -1) == y))


@pytest.mark.slow
def test_mnist_fit_logs_reach_early_stopping_and_csv(mnist_arrays, tmp_path):
    x_train, y_train, x_test, y_test = mnist_arrays
    x_val, y_val = x_test[:1000], y_test[:1000]
    model = small_mnist_cnn()
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    robustness = AdversarialRobustnessCallback(
        (x_val, y_val), epsilons=(0.1, 0.05), attack=FGSM(clip_value_min=0.0, clip_value_max=1.0)
    )
    stopping = keras.callbacks.EarlyStopping(monitor="val_adv_accuracy", mode="max", patience=5)
    log = tmp_path / "log.csv"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*val_adv_accuracy.*not available")
        history = model.fit(
            x_train[:2000],
            y_train[:2000],
            batch_size=64,
            epochs=2,
            verbose=0,
            callbacks=[robustness, stopping, keras.callbacks.CSVLogger(str(log))],
        )
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for key in (
        "val_adv_accuracy",
        "val_adv_accuracy_eps_0.1",
        "val_adv_accuracy_eps_0.05",
        "val_clean_accuracy",
    ):
        assert key in rows[0] and key in history.history
    logged = float(rows[-1]["val_adv_accuracy"])
    assert logged == pytest.approx(inline_fgsm_accuracy(model, x_val, y_val, 0.1), abs=0.01)
    assert float(rows[-1]["val_adv_accuracy_eps_0.05"]) >= logged
    assert float(rows[-1]["val_clean_accuracy"]) > float(rows[-1]["val_adv_accuracy_eps_0.05"])
    assert np.isfinite(stopping.best)  # it read the key (else it keeps its initial +-inf)
    assert sorted(robustness.reports) == [0, 1]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_n_epochs_repeats_the_last_value(kind):
    x, y = tiny_data()
    model = compiled(kind)
    callback = AdversarialRobustnessCallback((x, y), epsilons=0.2, every_n_epochs=2, attack="fgsm")
    measured = []  # FGSM accuracy of the weights at each epoch's end, computed independently
    inline = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: measured.append(
            inline_fgsm_accuracy(model, x, y, 0.2, clip=False)
        )
    )
    history = model.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[callback, inline])
    # Epochs 2 and 4 (counting from 1, as validation_freq=2), the first and the last.
    assert sorted(callback.reports) == [0, 1, 3, 4]
    values = history.history["val_adv_accuracy"]
    assert len(values) == 5 and values[2] == values[1]  # epoch 3 carries epoch 2's value
    for epoch in (0, 1, 3, 4):
        assert values[epoch] == pytest.approx(measured[epoch], abs=1.01 / len(y))


@pytest.mark.parametrize("n", [2, 3])
def test_every_n_epochs_follows_keras_validation_freq(n):
    x, y = tiny_data()
    validated = []
    seen = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: "val_loss" in logs and validated.append(epoch)
    )
    callback = AdversarialRobustnessCallback((x, y), epsilons=0.2, every_n_epochs=n, attack="fgsm")
    compiled().fit(
        x,
        y,
        epochs=2 * n,
        batch_size=48,
        validation_data=(x[:16], y[:16]),
        validation_freq=n,
        verbose=0,
        callbacks=[callback, seen],
    )
    assert validated == [n - 1, 2 * n - 1]
    assert sorted(callback.reports) == [0, *validated]  # and the first-epoch bootstrap


def test_deepcopy_shares_the_dataset_and_runs():
    x, y = tiny_data()
    dataset = tf.data.Dataset.from_tensor_slices({"feature": x, "label": y}).batch(32)
    callback = AdversarialRobustnessCallback(
        dataset, epsilons=(0.1, 0.3), attack=PGD(steps=3), verbose=0
    )
    model = compiled("functional")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    clone = copy.deepcopy(callback)
    assert clone.data is dataset and clone is not callback
    assert clone.model is None and clone.last_report is None and clone.reports == {}
    assert clone._attack == PGD((0.1, 0.3), steps=3) and clone._attack is not callback._attack
    assert clone.log_keys == callback.log_keys
    history = compiled("functional").fit(x, y, epochs=1, verbose=0, callbacks=[clone])
    assert "val_adv_accuracy_eps_0.3" in history.history
    assert callback.reports and sorted(clone.reports) == [0]


def test_tensorboard_accepts_the_names_and_images_are_written(tmp_path):
    x = np.random.default_rng(0).random((64, 6, 6, 1)).astype("float32")
    y = np.arange(64) % 3
    model = compiled("sequential", input_shape=(6, 6, 1))
    callback = AdversarialRobustnessCallback(
        (x, y),
        epsilons=(0.1, 0.25),
        clip_value_min=0.0,
        clip_value_max=1.0,
        log_dir=str(tmp_path / "robustness"),
        num_images=4,
        attack="fgsm",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[callback, keras.callbacks.TensorBoard(str(tmp_path / "tb"))],
        )
    assert not [w for w in caught if "name" in str(w.message).lower()]

    def tags(folder):
        found = set()
        for path in glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True):
            for event in tf.compat.v1.train.summary_iterator(path):
                found |= {value.tag for value in event.summary.value}
        return found

    # TensorBoard writes `val_*` keys to its validation run without the prefix.
    assert {"epoch_adv_accuracy", "epoch_adv_accuracy_eps_0.25", "epoch_clean_accuracy"} <= tags(
        str(tmp_path / "tb" / "validation")
    )
    assert {"clean_examples", "adversarial_examples_eps_0.1"} <= tags(str(tmp_path / "robustness"))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epsilons=-0.1), "`epsilons` must be >= 0"),
        (dict(epsilons=(0.1, 0.1000001)), "would be named '0.1'"),  # one log key for both
        (dict(attack="deepfool"), "`attack` must be one of .*'fgsm', 'pgd'"),
        (dict(norm="l0"), "`norm` must be one of 'infinity', 'l2', 'l1'"),
        (dict(attack="pgd", norm="l1"), "cannot be used with norm='l1'"),
        (dict(every_n_epochs=0), "`every_n_epochs` must be an integer >= 1"),
        (dict(max_examples=0), "`max_examples` must be an integer >= 1"),
        (dict(metric_name="val adv/acc"), "`metric_name` must be"),
        (dict(clip_value_min=1.0, clip_value_max=0.0), "clip_value_min"),
        (dict(stop_on_collapse=0.0), "`stop_on_collapse` must be a drop in accuracy in"),
        (dict(stop_on_collapse=True), "`stop_on_collapse` must be a drop in accuracy in"),
        (dict(attack="fgsm", stop_on_collapse=0.2), "`stop_on_collapse` needs a multi-step"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdversarialRobustnessCallback(tiny_data(), **kwargs)


def test_bad_data_type_fails_at_construction():
    with pytest.raises(TypeError, match="`data` must be"):
        AdversarialRobustnessCallback(np.zeros((4, 4)), attack="fgsm")


@pytest.mark.parametrize(
    "data, match",
    [
        ((tiny_data()[0], tiny_data()[1] + 5), r"class ids in \[0, 3\)"),
        ((tiny_data()[0],), "must include labels"),
        ({"feature": tiny_data()[0]}, "must include labels"),
    ],
)
def test_bad_data_fails_before_the_first_epoch(data, match):
    x, y = tiny_data()
    model = compiled()
    before = [w.copy() for w in model.get_weights()]
    epochs = []
    counter = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs.append(e))
    with pytest.raises(ValueError, match=match):
        model.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[AdversarialRobustnessCallback(data, attack="fgsm"), counter],
        )
    assert epochs == []
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_model_that_is_not_a_classifier_fails_before_the_first_epoch():
    model = keras.Sequential([keras.Input((4, 2)), keras.layers.Dense(3)])
    model.compile("adam", "mse")
    x, y = np.zeros((8, 4, 2), "float32"), np.zeros((8, 4, 3), "float32")
    with pytest.raises(ValueError, match="AdversarialRobustnessCallback cannot attack"):
        model.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[AdversarialRobustnessCallback((x, np.zeros(8)), attack="fgsm")],
        )


# --------------------------------------------------------------------------- catastrophic overfitting
class FakeReport:
    def __init__(self, accuracy):
        self.robust_accuracy = accuracy
        self.accuracy = {0.1: accuracy}
        self.clean_accuracy = 0.99
        self.description = "fake"
        self.warnings = []


@pytest.mark.parametrize("restore", [True, False])
def test_stop_on_collapse_stops_and_restores_the_best_weights(restore):
    # Robust accuracy per evaluation: the probe of on_train_begin, then epochs 1-5.
    measured = iter([0.5, 0.6, 0.7, 0.45, 0.8, 0.8])
    x, y = tiny_data()
    model = compiled()
    callback = AdversarialRobustnessCallback(
        (x, y), epsilons=0.1, attack="pgd", stop_on_collapse=0.2, restore_best_weights=restore
    )
    callback._evaluate = lambda max_examples: FakeReport(next(measured))
    weights = {}
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights.setdefault(epoch, model.get_weights())
    )
    with pytest.warns(UserWarning, match="collapsed from 0.7000 .epoch 2. to 0.4500 .epoch 3."):
        history = model.fit(x, y, epochs=5, verbose=0, callbacks=[callback, record])
    assert len(history.history["loss"]) == 3  # stopped at the end of epoch 3
    assert callback.collapsed_epoch == 2 and callback.best_epoch == 1
    assert history.history["val_adv_accuracy"] == [0.6, 0.7, 0.45]
    expected = weights[1] if restore else weights[2]
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_drop_smaller_than_stop_on_collapse_does_not_stop():
    measured = iter([0.5, 0.6, 0.7, 0.55, 0.65])
    x, y = tiny_data()
    model = compiled()
    callback = AdversarialRobustnessCallback((x, y), attack="pgd", stop_on_collapse=0.2)
    callback._evaluate = lambda max_examples: FakeReport(next(measured))
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 4 and callback.collapsed_epoch is None
