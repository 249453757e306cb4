"""`AdversarialRegularization` on Keras' JAX backend.

One train step on JAX equals one on TensorFlow from the same weights and batch (both
backends run in subprocesses of tests/training_backend_worker.py, one per backend); and on
JAX itself: `fit` trains, the random start stays in the ball, save/load round-trips, the
epsilon schedule retraces, unsupported settings fail before training, and importing the
training package leaves TensorFlow out. Run with `KERAS_BACKEND=jax`; the torch-only test
with `KERAS_BACKEND=torch`.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

pytest.importorskip("jax")

pytestmark = pytest.mark.backends

BACKEND = keras.backend.backend()
on_jax = pytest.mark.skipif(BACKEND != "jax", reason="runs with KERAS_BACKEND=jax")
TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "training_backend_worker.py"
LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
LOG_NAMES = {"loss", "labeled_loss", "scaled_adversarial_loss", "accuracy"}


def _env(backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent), env.get("PYTHONPATH", "")])
    return env


def _training():
    """The training package (imported here, not at module level: on TensorFlow it would
    import the whole of keras_advreg first)."""
    import keras_advreg.training as training

    return training


def _blobs(n=96, seed=0):
    """Two well-separated classes in 4 dimensions, features in [0, 1]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = 0.3 + 0.4 * y[:, None] + rng.normal(0, 0.08, (n, 4))
    return np.clip(x, 0, 1).astype("float32"), y


def _classifier():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )


# ------------------------------------------------------------------ parity with TensorFlow
@on_jax
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow for the reference"
)
def test_one_train_step_equals_tensorflow(tmp_path):
    """FGSM (l-inf, l2, l1) and PGD (l-inf, l2; clipped, masked, dict and int features,
    two outputs, regularizers, BatchNorm) with sample weights, on Sequential, functional and
    subclassed base models: the neighbour, the logs of one step, the weights after it and
    the evaluation after it agree with TensorFlow's to 1e-5."""
    runs = {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / backend
        out.mkdir()
        runs[backend] = subprocess.Popen(
            [sys.executable, str(WORKER), str(out)],
            env=_env(backend),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for backend, process in runs.items():
        output, _ = process.communicate(timeout=900)
        assert process.returncode == 0, f"{backend} worker failed:\n{output[-4000:]}"

    cases = sorted(p.stem for p in (tmp_path / "tensorflow").glob("*.npz"))
    assert len(cases) == 9
    problems = []
    for case in cases:
        with np.load(tmp_path / "tensorflow" / f"{case}.npz") as file:
            expected = dict(file)
        with np.load(tmp_path / "jax" / f"{case}.npz") as file:
            actual = dict(file)
        if sorted(expected) != sorted(actual):  # the same log names, too
            problems.append(f"{case}: keys {sorted(expected)} != {sorted(actual)}")
            continue
        for key in expected:
            want, got = expected[key].astype("float64"), actual[key].astype("float64")
            if not np.all(np.isfinite(want)):
                problems.append(f"{case}/{key}: not finite on TensorFlow")
            elif not np.allclose(got, want, rtol=1e-5, atol=1e-5):
                problems.append(f"{case}/{key}: max |diff| {np.max(np.abs(got - want)):.3g}")
        assert float(expected["log_scaled_adversarial_loss"]) > 0
    assert not problems, "JAX differs from TensorFlow:\n" + "\n".join(problems)


# ------------------------------------------------------------------ imports
def test_importing_training_on_jax_leaves_tensorflow_out():
    code = (
        "import importlib, sys\n"
        "importlib.import_module('keras_advreg.training')\n"
        "print(sorted(m for m in ('tensorflow', 'neural_structured_learning') if m in sys.modules))"
    )
    env = dict(_env("jax"), KERAS_ADVREG_LAZY_IMPORT="1")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_training_modules_import_tensorflow_only_inside_functions():
    """No module of keras_advreg/training imports TensorFlow or NSL at import time."""
    import ast

    package = TESTS.parent / "keras_advreg" / "training"
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module-level statements only
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name.split(".")[0] in ("tensorflow", "neural_structured_learning") or name in (
                    "keras_advreg.backend.nsl",
                    "keras_advreg.backend.nsl_private",
                ):
                    offenders.append(f"{path.name}: {name}")
    assert not offenders


# ------------------------------------------------------------------ training on JAX
@on_jax
def test_fit_reduces_the_loss_and_logs_the_tensorflow_names():
    training = _training()
    keras.utils.set_random_seed(1)
    model = training.AdversarialRegularization(
        _classifier(),
        adv_config=training.AdvConfig(
            multiplier=0.5,
            adv_step_size=0.02,
            adv_grad_norm="infinity",
            pgd_iterations=3,
            pgd_epsilon=0.05,
            clip_value_min=0.0,
            clip_value_max=1.0,
        ),
    )
    model.compile(keras.optimizers.Adam(0.05), LOGITS_CE, metrics=["accuracy"])
    x, y = _blobs()
    weights = np.linspace(0.5, 1.5, len(y)).astype("float32")
    history = model.fit(
        x, y, sample_weight=weights, batch_size=16, epochs=8, verbose=0, validation_data=(x, y)
    ).history
    assert set(history) == LOG_NAMES | {f"val_{name}" for name in LOG_NAMES}
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["scaled_adversarial_loss"][-1] < history["scaled_adversarial_loss"][0]
    np.testing.assert_allclose(
        history["loss"],
        np.add(history["labeled_loss"], history["scaled_adversarial_loss"]),
        rtol=1e-5,
    )
    assert history["val_accuracy"][-1] > 0.9
    np.testing.assert_allclose(model.predict(x, verbose=0), model.base_model(x), atol=1e-6)


@on_jax
def test_dict_and_tuple_data_train_identically():
    training = _training()
    x, y = _blobs(32)
    results = []
    for dict_data in (False, True):
        base = _classifier()
        base.set_weights([np.full(w.shape, 0.1 * (i + 1), "float32") for i, w in
                          enumerate(base.get_weights())])  # fmt: skip
        model = training.AdversarialRegularization(
            base, adv_config=training.AdvConfig(adv_step_size=0.05, pgd_iterations=2)
        )
        model.compile("sgd", LOGITS_CE)
        data = {"feature": x, "label": y} if dict_data else (x, y)
        args = (data,) if dict_data else data
        history = model.fit(*args, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        results.append((history, [np.asarray(w) for w in base.get_weights()]))
    (h_tuple, w_tuple), (h_dict, w_dict) = results
    for name in ("loss", "scaled_adversarial_loss"):
        np.testing.assert_allclose(h_dict[name], h_tuple[name], rtol=1e-6)
    for a, b in zip(w_dict, w_tuple):
        np.testing.assert_allclose(a, b, atol=1e-7)


@on_jax
@pytest.mark.parametrize("norm", ["infinity", "l2"])
def test_random_start_trains_and_stays_in_the_ball(norm):
    training = _training()
    keras.utils.set_random_seed(3)
    eps = 0.1
    config = training.AdvConfig(
        multiplier=0.5,
        adv_step_size=0.05,
        adv_grad_norm=norm,
        pgd_iterations=2,
        pgd_epsilon=eps,
        random_init=True,
    )
    model = training.AdversarialRegularization(_classifier(), adv_config=config)
    model.compile("adam", LOGITS_CE)
    x, y = _blobs(32)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert np.isfinite(logs["scaled_adversarial_loss"])

    first, _ = model.perturb_on_batch((x, y), pgd_iterations=1)
    second, _ = model.perturb_on_batch((x, y), pgd_iterations=1)
    assert not np.allclose(first, second)  # a new draw each call
    for adv in (first, second):
        delta = (adv - x).reshape(len(x), -1)
        size = np.abs(delta).max(1) if norm == "infinity" else np.linalg.norm(delta, axis=1)
        assert np.all(size <= eps * (1 + 1e-5))
        assert np.all(size > 0)


@on_jax
def test_perturb_on_batch_overrides_and_dict_format():
    training = _training()
    x, y = _blobs(8)
    model = training.AdversarialRegularization(
        _classifier(), adv_config=training.AdvConfig(adv_step_size=0.01)
    )
    model.compile("sgd", LOGITS_CE)
    out = model.perturb_on_batch({"feature": x, "label": y}, adv_step_size=0.2,
                                 adv_grad_norm="infinity")  # fmt: skip
    assert sorted(out) == ["feature", "label"]
    np.testing.assert_array_equal(out["label"], y)
    np.testing.assert_allclose(np.abs(out["feature"] - x), 0.2, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown perturbation setting"):
        model.perturb_on_batch((x, y), epsilon=0.1)


@on_jax
def test_save_and_load_round_trip_and_resume(tmp_path):
    training = _training()
    keras.utils.set_random_seed(2)
    config = training.AdvConfig(
        multiplier=0.3, adv_step_size=0.05, adv_grad_norm="l2", pgd_iterations=2, pgd_epsilon=0.1
    )
    model = training.AdversarialRegularization(_classifier(), adv_config=config)
    model.compile(keras.optimizers.Adam(0.01), LOGITS_CE, metrics=["accuracy"])
    x, y = _blobs(48)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)

    loaded = keras.models.load_model(path)
    assert isinstance(loaded, training.AdversarialRegularization)
    assert loaded.adv_config == config
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    for name in ("loss", "labeled_loss", "scaled_adversarial_loss", "accuracy"):
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6)
    # The optimizer state came back too: one more epoch on each gives the same weights.
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.base_model.get_weights(), model.base_model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)

    model.save_base_model(tmp_path / "base.keras")
    base = keras.models.load_model(tmp_path / "base.keras")
    np.testing.assert_allclose(base.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@on_jax
def test_epsilon_schedule_retraces_the_step():
    training = _training()
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((self.model.adv_config.pgd_epsilon, logs["scaled_adversarial_loss"]))

    config = training.AdvConfig(
        multiplier=1.0, adv_step_size=0.2, adv_grad_norm="infinity", pgd_epsilon=0.2
    )
    model = training.AdversarialRegularization(_classifier(), adv_config=config)
    model.compile(keras.optimizers.SGD(0.0), LOGITS_CE)  # weights fixed: the radius alone acts
    x, y = _blobs(32)
    schedule = training.EpsilonSchedule(warmup_epochs=3)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[schedule, Record()])
    np.testing.assert_allclose([eps for eps, _ in seen], [0.2 / 3, 0.4 / 3, 0.2], rtol=1e-6)
    losses = [loss for _, loss in seen]
    assert losses[0] < losses[1] < losses[2]  # a larger radius, a larger adversarial loss


# ------------------------------------------------------------------ unsupported settings
@on_jax
@pytest.mark.parametrize(
    "fields, match",
    [
        (
            dict(adv_loss="trades"),
            "adv_loss='trades' runs on the TensorFlow backend only. "
            "Received: adv_loss='trades' on backend='jax'",
        ),
        (
            dict(free_replays=4, pgd_epsilon=0.1),
            r"`free_replays`\) runs on the TensorFlow backend only. "
            "Received: free_replays=4 on backend='jax'",
        ),
    ],
)
def test_tensorflow_only_settings_fail_before_training(fields, match):
    training = _training()
    config = training.AdvConfig(**fields)
    with pytest.raises(ValueError, match=match):
        training.AdversarialRegularization(_classifier(), adv_config=config)
    # Also when the config is changed after construction: `fit` refuses before any step.
    model = training.AdversarialRegularization(_classifier())
    model.compile("sgd", LOGITS_CE)
    model.adv_config = config
    x, y = _blobs(16)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.evaluate(x, y, verbose=0)


@on_jax
def test_functional_adversarial_loss_needs_tensorflow():
    training = _training()
    with pytest.raises(RuntimeError, match="needs the TensorFlow backend"):
        training.adversarial_loss(np.zeros((2, 4), "float32"), np.zeros(2), _classifier(),
                                  LOGITS_CE)  # fmt: skip


@on_jax
def test_integer_only_features_and_missing_loss_fail_clearly():
    training = _training()
    ids = keras.Input((3,), dtype="int32")
    base = keras.Model(ids, keras.layers.Dense(2)(keras.ops.cast(ids, "float32")))
    model = training.AdversarialRegularization(base)
    model.compile("sgd", LOGITS_CE)
    with pytest.raises(ValueError, match="none of the features is a float tensor"):
        model.fit(np.ones((8, 3), "int32"), np.zeros(8, "int32"), verbose=0)
    unlossed = training.AdversarialRegularization(_classifier())
    unlossed.compile("sgd")
    with pytest.raises(ValueError, match="call `model.compile"):
        unlossed.fit(*_blobs(8), verbose=0)


@pytest.mark.skipif(BACKEND != "torch", reason="runs with KERAS_BACKEND=torch")
def test_torch_backend_is_refused_at_construction():
    training = _training()
    with pytest.raises(RuntimeError, match="needs the TensorFlow or JAX backend.*'torch'"):
        training.AdversarialRegularization(_classifier())
