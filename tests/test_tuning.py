"""Tests of keras_advreg.tuning: keras-tuner searches over the adversarial hyperparameters."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pytest
from conftest import MODEL_KINDS, make_model, require

from keras_advreg import AdvConfig, AdversarialRegularization, tuning
from keras_advreg.tuning import (
    ADV_ACCURACY,
    CLEAN_ADV_ACCURACY,
    AdversarialHyperModel,
    objective,
    search,
)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
ADV_NAMES = ("adv_multiplier", "adv_step_size", "adv_grad_norm")


# --------------------------------------------------------------------------- data and models
@pytest.fixture(scope="module")
def mnist_small(mnist_arrays):
    """1024 training and 512 validation examples of real MNIST."""
    x_train, y_train, x_test, y_test = mnist_arrays
    return (x_train[:1024], y_train[:1024]), (x_test[:512], y_test[:512])


def mnist_base_model(hp):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def mnist_hypermodel(**kwargs):
    kwargs.setdefault("metrics", ["accuracy"])
    kwargs.setdefault("adv_config", AdvConfig(clip_value_min=0.0, clip_value_max=1.0))
    return AdversarialHyperModel(mnist_base_model, loss=LOSS, **kwargs)


def tiny_data(n=64, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, features), dtype=np.float32)
    y = (x.sum(axis=1) > features / 2).astype("int64") + (x[:, 0] > 0.8).astype("int64")
    return x, y


def tiny_hypermodel(kind="sequential", **kwargs):
    kwargs.setdefault("metrics", ["accuracy"])
    return AdversarialHyperModel(lambda hp: make_model(kind), loss=LOSS, **kwargs)


def trials_by_status(tuner):
    statuses = {}
    for trial in tuner.oracle.trials.values():
        statuses.setdefault(trial.status, []).append(trial)
    return statuses


def last(trial, name):
    return trial.metrics.get_last_value(name)


def clean_accuracy(trial):
    """The clean accuracy `val_clean_adv_accuracy` is made of: the callback's, else Keras'."""
    for name in tuning.hypermodel.CLEAN_ACCURACY_KEYS:
        if trial.metrics.exists(name):
            return last(trial, name)
    raise AssertionError(f"no clean accuracy in {sorted(trial.metrics.metrics)}")


class TrainingRecorder(keras.callbacks.Callback):
    """Records training starts; class-level because keras-tuner deep-copies callbacks."""

    started: list = []

    def on_train_begin(self, logs=None):
        TrainingRecorder.started.append(True)


# --------------------------------------------------------------------------- real searches
@pytest.mark.slow
def test_random_search_on_mnist_optimises_robust_accuracy(mnist_small, tmp_path):
    (x, y), (x_val, y_val) = mnist_small
    hypermodel = mnist_hypermodel()
    tuner = kt.RandomSearch(
        hypermodel,
        objective=kt.Objective("val_adv_accuracy", "max"),
        max_trials=3,
        seed=1,
        directory=tmp_path,
        project_name="mnist",
        overwrite=True,
    )
    space = [hp.name for hp in tuner.oracle.get_space().space]
    assert set(ADV_NAMES) <= set(space)

    completed = search(
        tuner, x, y, epochs=1, batch_size=32, validation_data=(x_val, y_val), verbose=0
    )

    assert len(completed) == 3
    assert [t.status for t in tuner.oracle.trials.values()] == ["COMPLETED"] * 3
    for trial in completed:
        assert math.isfinite(trial.score)
        assert 0.0 <= trial.score <= 1.0
        assert trial.score == last(trial, ADV_ACCURACY)
        # The balanced metric is written next to it, from the same epoch's logs.
        expected = 0.5 * trial.score + 0.5 * clean_accuracy(trial)
        assert last(trial, CLEAN_ADV_ACCURACY) == pytest.approx(expected)
    # Different trials searched different values.
    assert len({t.hyperparameters.get("adv_multiplier") for t in completed}) == 3

    best_hp = tuner.get_best_hyperparameters()[0]
    assert best_hp.values == max(completed, key=lambda t: t.score).hyperparameters.values
    config = AdvConfig.from_hyperparameters(best_hp)
    assert config.multiplier == best_hp.get("adv_multiplier")
    assert config.adv_step_size == best_hp.get("adv_step_size")
    assert config.adv_grad_norm == best_hp.get("adv_grad_norm")
    full = hypermodel.get_adv_config(best_hp)
    assert full == config.replace(clip_value_min=0.0, clip_value_max=1.0)

    best = tuner.get_best_models()[0]
    assert isinstance(best, AdversarialRegularization)
    assert best.adv_config == full
    # The reloaded weights are the best trial's trained ones: its logged clean accuracy.
    best_trial = tuner.oracle.get_best_trials(1)[0]
    preds = best.predict(x_val, verbose=0)
    accuracy = np.mean(np.argmax(preds, -1) == y_val)
    assert accuracy == pytest.approx(last(best_trial, "val_accuracy"), abs=1e-6)
    path = tmp_path / "best.keras"
    best.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x_val, verbose=0), preds, rtol=1e-6, atol=1e-6)
    assert reloaded.adv_config == full


@pytest.mark.slow
def test_hyperband_on_mnist_with_balanced_objective(mnist_small, tmp_path):
    (x, y), (x_val, y_val) = mnist_small
    hypermodel = mnist_hypermodel(max_eval_examples=256, robust_weight=0.25)
    tuner = kt.Hyperband(
        hypermodel,
        objective=hypermodel.objective("clean_adv"),
        max_epochs=2,
        factor=2,
        seed=0,
        directory=tmp_path,
        project_name="hyperband",
        overwrite=True,
    )
    completed = search(
        tuner, x[:512], y[:512], batch_size=64, validation_data=(x_val, y_val), verbose=0
    )

    statuses = trials_by_status(tuner)
    assert set(statuses) == {"COMPLETED"}
    assert len(completed) >= 2
    for trial in completed:
        assert math.isfinite(trial.score)
        expected = 0.25 * last(trial, ADV_ACCURACY) + 0.75 * clean_accuracy(trial)
        assert last(trial, CLEAN_ADV_ACCURACY) == pytest.approx(expected)
    # Hyperband continued some trial for a second epoch (initial_epoch=1).
    assert any(t.hyperparameters.get("tuner/epochs") == 2 for t in completed)


def test_bayesian_optimization(tmp_path):
    require("sklearn")  # BayesianOptimization needs it; the `tuner` extra installs it
    x, y = tiny_data()
    hypermodel = tiny_hypermodel()
    tuner = kt.BayesianOptimization(
        hypermodel,
        objective=hypermodel.objective(),
        max_trials=3,
        num_initial_points=2,
        seed=0,
        directory=tmp_path,
        overwrite=True,
    )
    completed = search(tuner, x, y, epochs=1, validation_data=(x, y), verbose=0)
    assert len(completed) == 3
    assert all(math.isfinite(t.score) for t in completed)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_model_kinds_and_best_model_round_trip(kind, tmp_path):
    x, y = tiny_data()
    hypermodel = tiny_hypermodel(kind)
    tuner = kt.RandomSearch(
        hypermodel, objective=hypermodel.objective(), max_trials=1, directory=tmp_path
    )
    completed = search(tuner, x, y, epochs=2, validation_data=(x, y), verbose=0)
    assert len(completed) == 1
    best = tuner.get_best_models()[0]
    assert isinstance(best.base_model, keras.Model)
    path = tmp_path / f"{kind}.keras"
    best.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), best.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )
    # Not the initial weights: the reloaded best model is the trained one.
    fresh = hypermodel.build(tuner.get_best_hyperparameters()[0])
    assert not np.allclose(fresh.predict(x, verbose=0), best.predict(x, verbose=0))


# --------------------------------------------------------------------------- search space
def test_search_space_defaults_and_tutorial_values():
    hypermodel = tiny_hypermodel()
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    space = {h.name: h for h in hp.space}
    assert list(space) == list(ADV_NAMES)
    assert space["adv_multiplier"].sampling == "log"
    assert (space["adv_multiplier"].min_value, space["adv_multiplier"].max_value) == (0.01, 1.0)
    assert list(space["adv_grad_norm"].values) == ["infinity", "l2"]
    # The defaults are the tutorial's hand-picked 0.2 / 0.2 / l-inf.
    assert hp.values == {"adv_multiplier": 0.2, "adv_step_size": 0.2, "adv_grad_norm": "infinity"}
    assert model.adv_config == AdvConfig(
        multiplier=0.2, adv_step_size=0.2, adv_grad_norm="infinity"
    )


def test_search_space_overrides():
    hypermodel = tiny_hypermodel(
        adv_multiplier=0.3,
        adv_step_size={"min_value": 0.05, "max_value": 0.15, "sampling": "linear", "default": 0.1},
        adv_grad_norm="inf",
        pgd_iterations=(1, 3),
        pgd_epsilon=(0.1, 0.3),
        adv_config=AdvConfig(clip_value_min=0.0, clip_value_max=1.0),
    )
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    space = {h.name: h for h in hp.space}
    assert type(space["adv_multiplier"]).__name__ == "Fixed"
    assert type(space["adv_grad_norm"]).__name__ == "Fixed"
    assert space["adv_step_size"].sampling == "linear"
    assert type(space["pgd_iterations"]).__name__ == "Int"
    assert model.adv_config == AdvConfig(
        multiplier=0.3,
        adv_step_size=0.1,
        adv_grad_norm="infinity",
        pgd_iterations=1,
        pgd_epsilon=0.2,
        clip_value_min=0.0,
        clip_value_max=1.0,
    )
    # Values fixed beforehand in the tuner's hyperparameters take precedence.
    preset = kt.HyperParameters()
    preset.Fixed("adv_grad_norm", "l2")
    preset.Fixed("pgd_iterations", 3)
    assert hypermodel.build(preset).adv_config.adv_grad_norm == "l2"
    assert hypermodel.get_adv_config(preset).pgd_iterations == 3


def test_search_space_not_searched_uses_adv_config():
    base = AdvConfig(multiplier=0.7, adv_step_size=0.05, adv_grad_norm="l1")
    hypermodel = tiny_hypermodel(
        adv_multiplier=None, adv_step_size=None, adv_grad_norm=None, adv_config=base
    )
    hp = kt.HyperParameters()
    assert hypermodel.build(hp).adv_config == base
    assert hp.space == []


def test_search_space_of_losses_and_methods():
    hypermodel = tiny_hypermodel(
        adv_grad_norm="infinity",
        adv_loss=["labeled", "trades"],
        adv_method=["nsl", "fast", "free"],
        free_replays=(2, 6),
        pgd_iterations=(1, 3),
        pgd_epsilon=0.3,
        adv_config=AdvConfig(clip_value_min=0.0, clip_value_max=1.0),
    )
    hp = hypermodel.declare_hyperparameters(kt.HyperParameters())
    space = {h.name: h for h in hp.space}
    assert list(space["adv_loss"].values) == ["labeled", "trades"]
    assert list(space["adv_method"].values) == ["nsl", "fast", "free"]
    assert (space["free_replays"].min_value, space["free_replays"].max_value) == (2, 6)
    values = dict(hp.values, adv_step_size=0.1, pgd_iterations=3, free_replays=5)
    nsl = hypermodel.get_adv_config(dict(values, adv_method="nsl", adv_loss="trades"))
    assert (nsl.adv_loss, nsl.pgd_iterations, nsl.free_replays) == ("trades", 3, None)
    fast = hypermodel.get_adv_config(dict(values, adv_method="fast"))
    assert (fast.random_init, fast.pgd_iterations, fast.pgd_epsilon) == (True, 1, 0.3)
    assert fast.adv_step_size == pytest.approx(0.375) and fast.free_replays is None
    free = hypermodel.get_adv_config(dict(values, adv_method="free", adv_loss="trades"))
    assert (free.free_replays, free.adv_loss, free.adv_step_size) == (5, "labeled", 0.3)
    model = hypermodel.build(kt.HyperParameters.from_config(hp.get_config()))
    assert model.adv_config.adv_loss == "labeled"  # the defaults: first values


def test_a_free_trial_trains():
    hp = kt.HyperParameters()
    hp.Fixed("adv_method", "free")
    hypermodel = tiny_hypermodel(
        adv_method="free", free_replays=3, pgd_epsilon=0.1, adv_grad_norm="infinity"
    )
    model = hypermodel.build(hp)
    x, y = tiny_data()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert model.adv_config.free_replays == 3 and int(model.optimizer.iterations) == 3


def test_build_base_model_without_hp_and_fresh_optimizer_per_trial():
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    hypermodel = AdversarialHyperModel(
        lambda: make_model("functional"), loss=LOSS, optimizer=optimizer, metrics=["accuracy"]
    )
    first = hypermodel.build(kt.HyperParameters())
    second = hypermodel.build(kt.HyperParameters())
    assert first.optimizer is not optimizer and first.optimizer is not second.optimizer
    assert float(first.optimizer.learning_rate) == pytest.approx(0.01)
    # A base model defining its own hyperparameters joins the search space.
    hypermodel = AdversarialHyperModel(
        lambda hp: make_model("sequential", hidden=hp.Int("units", 4, 16, step=4)), loss=LOSS
    )
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    assert "units" in hp.values
    assert model.base_model.layers[1].units == 4


def test_a_builder_that_compiles_keeps_its_optimizer_loss_and_metrics():
    def build(hp):
        model = make_model("sequential")
        rate = hp.Choice("learning_rate", [1e-2, 1e-3])
        model.compile(
            keras.optimizers.SGD(rate), loss=LOSS, metrics=["sparse_categorical_accuracy"]
        )
        return model

    hypermodel = AdversarialHyperModel(build, loss="mse", metrics=["accuracy"])
    hp = kt.HyperParameters()
    hp.Fixed("learning_rate", 1e-2)
    model = hypermodel.build(hp)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)
    x, y = tiny_data()
    logs = model.fit(x, y, epochs=1, verbose=0).history
    # The builder's metrics and loss (the hypermodel's "mse" would fail on these labels).
    assert "sparse_categorical_accuracy" in logs and "accuracy" not in logs
    assert logs["loss"][0] > 0


def test_string_objectives_naming_our_accuracies_are_maximised(tmp_path):
    hypermodel = tiny_hypermodel()
    for name in (ADV_ACCURACY, CLEAN_ADV_ACCURACY, "val_adv_accuracy_eps_0.1"):
        tuner = kt.RandomSearch(
            hypermodel, objective=name, max_trials=1, directory=tmp_path, project_name=name
        )
        assert tuner.oracle.objective == kt.Objective(name, "max")
    # keras-tuner's own inference is unchanged for other names.
    tuner = kt.RandomSearch(hypermodel, objective="val_loss", max_trials=1, directory=tmp_path)
    assert tuner.oracle.objective == kt.Objective("val_loss", "min")
    with pytest.raises(ValueError, match="Could not infer optimization direction"):
        kt.RandomSearch(hypermodel, objective="val_adv_accuracies", directory=tmp_path)


def test_objective_helpers():
    assert objective() == kt.Objective("val_adv_accuracy", "max")
    assert objective("clean_adv") == kt.Objective("val_clean_adv_accuracy", "max")
    assert tiny_hypermodel().objective("clean_adv") == objective("clean_adv")
    with pytest.raises(ValueError, match="`kind` must be one of"):
        objective("balanced")


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"adv_multiplier": (1.0, 0.1)}, "`adv_multiplier` is an empty range"),
        ({"adv_step_size": {"min_value": 0.5, "max_value": 0.1}}, "`adv_step_size` is an empty"),
        ({"pgd_iterations": (3, 1)}, "`pgd_iterations` is an empty range"),
        ({"adv_grad_norm": []}, "`adv_grad_norm` must be a norm or a non-empty list"),
        ({"adv_grad_norm": {"values": []}}, "`adv_grad_norm` must be a non-empty list"),
        ({"adv_grad_norm": ["infinity", "l3"]}, "`adv_grad_norm` must be one of"),
        ({"adv_loss": ["labeled", "kl"]}, "`adv_loss` must be one of 'labeled', 'trades'"),
        ({"adv_method": "madry"}, "`adv_method` must be one of 'nsl', 'fast', 'free'"),
        ({"free_replays": 2, "adv_step_size": None}, "`free_replays` needs .*pgd_epsilon=None"),
        ({"free_replays": (0, 2)}, "`free_replays` must be a range of integers >= 1"),
        ({"adv_multiplier": (-1.0, 1.0)}, "`adv_multiplier` must be a range of numbers >= 0"),
        ({"adv_step_size": {"min_value": 0.0, "max_value": 0.1, "sampling": "log"}}, "log"),
        ({"adv_multiplier": (0.1, 0.2, 0.3)}, "`adv_multiplier` must be a number or a"),
        ({"pgd_iterations": 0}, "`pgd_iterations` must be an integer >= 1"),
        ({"epsilons": ()}, "`epsilons` must be a number or a non-empty sequence"),
        ({"attack": "cw"}, "`attack` must be one of .*'fgsm', 'pgd'"),
        (
            {"callback_kwargs": {"metric_name": "acc"}},
            r"`callback_kwargs` cannot set \['metric_name'\]",
        ),
        ({"robust_weight": 1.5}, r"`robust_weight` must be a number in \[0, 1\]"),
        ({"max_eval_examples": 0}, "`max_eval_examples` must be a positive integer"),
        (
            {"adv_grad_norm": ["infinity", "l1"], "pgd_epsilon": (0.01, 0.5)},
            "`adv_grad_norm` may not include 'l1' when `pgd_epsilon` is searched or set",
        ),
        (
            {"adv_grad_norm": "l1", "adv_config": AdvConfig(adv_grad_norm="l2", pgd_epsilon=0.1)},
            "NSL can only project perturbations onto an 'infinity' or 'l2' ball",
        ),
    ],
)
def test_bad_search_space_raises_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_hypermodel(**kwargs)


def test_build_returning_non_model_raises_before_first_trial(tmp_path):
    hypermodel = AdversarialHyperModel(lambda hp: "not a model", loss=LOSS)
    # keras-tuner builds once at construction to learn the search space.
    with pytest.raises(TypeError, match=r"`build_base_model` must return a keras.Model.*str"):
        kt.RandomSearch(hypermodel, objective=objective(), max_trials=1, directory=tmp_path)
    with pytest.raises(TypeError, match="`build_base_model` must be a callable"):
        AdversarialHyperModel("not callable", loss=LOSS)
    wrapped = AdversarialHyperModel(
        lambda hp: AdversarialRegularization(make_model("sequential")), loss=LOSS
    )
    with pytest.raises(TypeError, match="must return the base model"):
        wrapped.build(kt.HyperParameters())


@pytest.mark.parametrize(
    "tuner_objective, match",
    [
        (kt.Objective("val_adversarial_accuracy", "max"), "'val_adversarial_accuracy' is not a"),
        (kt.Objective("val_adv_accuracy", "min"), "must be maximised"),
        (None, "The tuner has no objective"),
    ],
)
def test_bad_objective_raises_before_training(tuner_objective, match, tmp_path):
    x, y = tiny_data()
    hypermodel = tiny_hypermodel()
    tuner = kt.RandomSearch(hypermodel, objective=tuner_objective, max_trials=2, directory=tmp_path)
    TrainingRecorder.started.clear()
    with pytest.raises(ValueError, match=match):
        tuner.search(
            x, y, epochs=1, validation_data=(x, y), callbacks=[TrainingRecorder()], verbose=0
        )
    assert TrainingRecorder.started == []
    assert "COMPLETED" not in trials_by_status(tuner)


def test_objective_from_keras_metrics_is_accepted(tmp_path):
    x, y = tiny_data()
    hypermodel = tiny_hypermodel()
    tuner = kt.RandomSearch(
        hypermodel,
        objective=[kt.Objective("val_loss", "min"), kt.Objective("val_adv_accuracy", "max")],
        max_trials=1,
        directory=tmp_path,
    )
    assert len(search(tuner, x, y, epochs=1, validation_data=(x, y), verbose=0)) == 1


def test_missing_validation_data_raises_before_training(tmp_path):
    x, y = tiny_data()
    hypermodel = tiny_hypermodel()
    tuner = kt.RandomSearch(hypermodel, objective=objective(), max_trials=1, directory=tmp_path)
    with pytest.raises(ValueError, match="pass `validation_data="):
        tuner.search(x, y, epochs=1, verbose=0)


def test_missing_tensorboard_raises_at_construction(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r'pip install "keras-advreg\[tuner\]"'):
        tiny_hypermodel()


# --------------------------------------------------------------------------- failed trials
def failing_builder():
    """A base-model builder that works at tuner construction, then fails each trial."""
    calls = []

    def build(hp):
        calls.append(hp)
        if len(calls) > 1:
            raise RuntimeError(f"boom in build #{len(calls)}")
        return make_model("sequential")

    return build


@pytest.mark.parametrize("max_trials", [2, 3])
def test_search_raises_first_trial_error_when_every_trial_failed(max_trials, tmp_path):
    x, y = tiny_data()
    hypermodel = AdversarialHyperModel(failing_builder(), loss=LOSS)
    tuner = kt.RandomSearch(
        hypermodel, objective=objective(), max_trials=max_trials, directory=tmp_path
    )
    with pytest.raises(RuntimeError, match=f"All {min(max_trials, 3)} trial") as info:
        search(tuner, x, y, epochs=1, validation_data=(x, y), verbose=0)
    assert "boom in build #2" in str(info.value)
    assert "boom in build #3" not in str(info.value)


def test_plain_keras_tuner_search_hides_failed_trials(tmp_path):
    """What `search` guards against: keras-tuner returns normally with no scores."""
    x, y = tiny_data()
    hypermodel = AdversarialHyperModel(failing_builder(), loss=LOSS)
    tuner = kt.RandomSearch(hypermodel, objective=objective(), max_trials=2, directory=tmp_path)
    tuner.search(x, y, epochs=1, validation_data=(x, y), verbose=0)
    assert set(trials_by_status(tuner)) == {"FAILED"}


def test_search_warns_when_some_trials_failed(tmp_path):
    x, y = tiny_data()

    def build(hp):
        if hp.get("adv_grad_norm") == "l2":
            raise RuntimeError("no l2 today")
        return make_model("sequential")

    hypermodel = AdversarialHyperModel(
        build, loss=LOSS, metrics=["accuracy"], adv_multiplier=0.2, adv_step_size=0.1
    )
    tuner = kt.GridSearch(hypermodel, objective=objective(), directory=tmp_path)
    with pytest.warns(RuntimeWarning, match=r"(?s)1 of 2 trials failed.*RuntimeError: no l2 today"):
        completed = search(tuner, x, y, epochs=1, validation_data=(x, y), verbose=0)
    assert [t.hyperparameters.get("adv_grad_norm") for t in completed] == ["infinity"]


# --------------------------------------------------------------------------- distributed
DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras, numpy as np, keras_tuner as kt
    from keras_advreg.tuning import AdversarialHyperModel, search

    directory, log_dir = sys.argv[1], sys.argv[2]
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    y = (x.sum(axis=1) > 2).astype("int64")

    def build_base_model():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])

    hypermodel = AdversarialHyperModel(
        build_base_model,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    tuner = kt.RandomSearch(
        hypermodel, objective=hypermodel.objective(), max_trials=4, seed=0,
        directory=directory, project_name="distributed", overwrite=tuner_id == "chief",
    )
    ran = []
    end_trial = tuner.on_trial_end
    def on_trial_end(trial):
        ran.append(trial.trial_id)
        end_trial(trial)
    tuner.on_trial_end = on_trial_end
    completed = search(tuner, x, y, epochs=1, batch_size=16, validation_data=(x, y), verbose=0)
    with open(os.path.join(log_dir, tuner_id + ".json"), "w") as f:
        json.dump({"ran": ran, "completed": [t.trial_id for t in completed]}, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, procs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return  # a process exited early: the caller reports its output
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)


@pytest.mark.slow
def test_distributed_chief_and_two_workers_record_every_trial_once(tmp_path):
    script = tmp_path / "tune.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    directory, logs = tmp_path / "project", tmp_path / "logs"
    logs.mkdir()
    port = _free_port()
    base_env = {
        **os.environ,
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }

    def start(tuner_id):
        return subprocess.Popen(
            [sys.executable, str(script), str(directory), str(logs)],
            env={**base_env, "KERASTUNER_TUNER_ID": tuner_id},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    procs = {"chief": start("chief")}
    try:
        # Workers share the project directory: start them once the chief has set it up.
        _wait_for_port(port, list(procs.values()), timeout=60)
        procs.update({name: start(name) for name in ("tuner0", "tuner1")})
        outputs = {}
        deadline = time.monotonic() + 150
        for name, proc in procs.items():
            outputs[name] = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} failed:\n{outputs[name][-3000:]}"

    # The chief's oracle recorded 4 trials, each once, each completed with a score.
    trial_files = sorted((directory / "distributed").glob("trial_*/trial.json"))
    trials = [json.loads(p.read_text()) for p in trial_files]
    ids = [t["trial_id"] for t in trials]
    assert sorted(ids) == ["0", "1", "2", "3"]
    assert all(t["status"] == "COMPLETED" and math.isfinite(t["score"]) for t in trials)
    for t in trials:
        assert set(ADV_NAMES) <= set(t["hyperparameters"]["values"])
    # The workers ran them, each trial on exactly one worker; the chief ran none.
    reports = {name: json.loads((logs / f"{name}.json").read_text()) for name in procs}
    ran = reports["tuner0"]["ran"] + reports["tuner1"]["ran"]
    assert sorted(ran) == sorted(ids)
    assert reports["chief"]["ran"] == []
    assert sorted(reports["chief"]["completed"]) == sorted(ids)


def test_tuning_module_exports():
    assert set(tuning.__all__) == {
        "ADV_ACCURACY",
        "CLEAN_ADV_ACCURACY",
        "AdversarialHyperModel",
        "objective",
        "search",
    }


def test_the_evaluation_attack_is_resolved_once_in_the_training_box():
    from keras_advreg import attacks

    hypermodel = mnist_hypermodel(attack=attacks.PGD(steps=3), epsilons=(0.1, 0.2))
    expected = attacks.PGD((0.1, 0.2), steps=3, clip_value_min=0.0, clip_value_max=1.0)
    assert hypermodel.attack == expected
    x, y = tiny_data()
    assert hypermodel.make_callback((x, y))._attack == expected
    # An attack's own box is kept; the deprecated `attack_norm` still sets the norm, warning.
    own = attacks.FGSM(clip_value_min=-1.0, clip_value_max=2.0)
    assert mnist_hypermodel(attack=own).attack.clip_value_min == -1.0
    with pytest.warns(DeprecationWarning, match=r"norm='l2'.*attacks\.AutoAttack\("):
        hypermodel = mnist_hypermodel(attack_norm="l2")
    assert hypermodel.attack.norm == "l2" and hypermodel.attack.version == "fast"
