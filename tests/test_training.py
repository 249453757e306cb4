"""Training: TRADES' term, the "fast" and "free" presets, the epsilon schedule, saving the base model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_advreg
from keras_advreg.training.losses import trades_kl

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def kl(p, q):
    return float(np.mean(np.sum(p * np.log(p + 1e-7) - p * np.log(q + 1e-7), axis=-1)))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_trades_kl_equals_the_hand_computed_kl():
    p = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], "float32")
    q = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], "float32")
    assert float(trades_kl(p, q)) == pytest.approx(kl(p, q), rel=1e-5)
    weighted = float(trades_kl(p, q, np.array([1.0, 0.0], "float32")))
    assert weighted == pytest.approx(kl(p[:1], q[:1]), rel=1e-5)


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_trades_term_is_multiplier_times_kl_to_the_neighbour(kind):
    # clip_value_min == clip_value_max pins every neighbour to 0.5: the term is known exactly.
    keras.utils.set_random_seed(0)
    if kind == "sequential":
        base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    else:
        inputs = keras.Input((3,))
        base = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    config = keras_advreg.AdvConfig(
        multiplier=2.0,
        adv_step_size=0.1,
        adv_grad_norm="infinity",
        pgd_iterations=2,
        pgd_epsilon=0.1,
        clip_value_min=0.5,
        clip_value_max=0.5,
        adv_loss="trades",
    )
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile("sgd", LOSS)
    x = np.random.default_rng(0).random((6, 3)).astype("float32")
    y = np.arange(6) % 4
    logs = model.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    clean = softmax(np.asarray(base(x)))
    neighbour = softmax(np.asarray(base(np.full_like(x, 0.5))))
    assert logs["scaled_adversarial_loss"] == pytest.approx(2.0 * kl(clean, neighbour), rel=1e-4)
    model.fit(x, y, epochs=1, verbose=0)  # and it trains
    restored = keras_advreg.AdversarialRegularization.from_config(model.get_config())
    assert restored.adv_config.adv_loss == "trades"


def test_trades_with_a_regression_loss_fails_at_compile():
    base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model = keras_advreg.AdversarialRegularization(
        base, adv_config=keras_advreg.AdvConfig(adv_loss="trades")
    )
    with pytest.raises(ValueError, match="adv_loss='trades' needs a classification loss"):
        model.compile("sgd", "mse")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(adv_loss="kl"), "`adv_loss` must be one of 'labeled', 'trades'"),
        (dict(adv_loss="trades", multiplier=-1.0), "`multiplier` must be >= 0"),
    ],
)
def test_bad_trades_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_advreg.AdvConfig(**kwargs)


def test_fast_preset_is_wong_et_al():
    config = keras_advreg.AdvConfig.fast(0.3)
    assert (config.adv_step_size, config.pgd_epsilon, config.pgd_iterations) == (0.375, 0.3, 1)
    assert config.random_init and config.adv_grad_norm == "infinity"
    assert (config.clip_value_min, config.clip_value_max) == (0.0, 1.0)


def test_epsilon_schedule_reaches_the_target_on_the_right_epoch_and_survives_saving(tmp_path):
    from keras_advreg.training.schedule import EpsilonSchedule

    base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    config = keras_advreg.AdvConfig.fast(0.3)
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile("sgd", LOSS)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(model.adv_config.pgd_epsilon)
    )
    x = np.random.default_rng(0).random((8, 3)).astype("float32")
    y = np.arange(8) % 3
    model.fit(x, y, epochs=4, verbose=0, callbacks=[EpsilonSchedule(warmup_epochs=3), record])
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert model.adv_config.adv_step_size == pytest.approx(0.375)  # 1.25 * eps kept
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert keras.models.load_model(path).adv_config.pgd_epsilon == pytest.approx(0.3)
    with pytest.raises(ValueError, match="`warmup_epochs` must be at most the number of epochs"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[EpsilonSchedule(warmup_epochs=3)])


def test_save_base_model_writes_a_compiled_plain_model(tmp_path):
    base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    model = keras_advreg.AdversarialRegularization(base)
    model.compile("adam", LOSS, metrics=["accuracy"])
    x = np.random.default_rng(0).random((8, 3)).astype("float32")
    y = np.arange(8) % 3
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "base.keras")
    model.save_base_model(path)
    loaded = keras.models.load_model(path)
    logs = loaded.evaluate(x, y, verbose=0, return_dict=True)  # raised "must call compile()"
    assert set(logs) == {"loss", "accuracy"}


def free_reference(x, y, w, b, *, replays, step, eps, lr):
    """Free training of a linear regression by hand: MSE, SGD, zero start, clip to [0, 1]."""
    n = len(x)
    delta = np.zeros_like(x)
    for _ in range(replays):
        xr = np.clip(x + delta, 0.0, 1.0)
        err = xr @ w + b - y  # (n, 1)
        grad_w, grad_b = 2 / n * xr.T @ err, 2 / n * err.sum(0)
        grad_x = 2 / n * err @ w.T  # the same backward pass's input gradient
        w, b = w - lr * grad_w, b - lr * grad_b
        delta = np.clip(np.sign(grad_x) * step + xr - x, -eps, eps)  # carried to the next replay
    return w, b


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_free_training_replays_each_batch_and_carries_the_perturbation(kind):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, (8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    w0 = np.array([[0.5], [-1.0], [2.0]], "float32")
    b0 = np.array([0.1], "float32")
    if kind == "sequential":
        base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    elif kind == "functional":
        inputs = keras.Input((3,))
        base = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    else:

        class Linear(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(1)

            def call(self, inputs):
                return self.dense(inputs)

        base = Linear()
        base(x[:1])
    base.set_weights([w0, b0])
    # step 0.06 within a ball of 0.1: the second step is cut by the projection, so both the
    # carry and the projection show in the weights.
    config = keras_advreg.AdvConfig.free(0.1, replays=3, adv_step_size=0.06)
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile(keras.optimizers.SGD(0.5), "mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations) == 3  # one Keras step, three updates
    w, b = free_reference(x, y, w0, b0, replays=3, step=0.06, eps=0.1, lr=0.5)
    np.testing.assert_allclose(base.get_weights()[0], w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(base.get_weights()[1], b, rtol=1e-4, atol=1e-6)
    # Not the same as replaying the clean batch three times (the perturbation matters).
    w_clean, _ = free_reference(x, y, w0, b0, replays=3, step=0.0, eps=0.1, lr=0.5)
    assert np.abs(w - w_clean).max() > 1e-3


def test_free_training_trains_a_classifier_and_survives_save_and_load(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.rand(64, 6).astype("float32")
    y = (x.sum(1) > 3).astype("int32")
    base = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    config = keras_advreg.AdvConfig.free(0.1, replays=2, random_init=True)
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile("adam", LOSS, metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 2 * 2 * 2
    assert history.history["loss"] == history.history["scaled_adversarial_loss"]
    assert history.history["labeled_loss"] == [0.0, 0.0]  # no clean term
    model.save(tmp_path / "free.keras")
    loaded = keras.models.load_model(tmp_path / "free.keras")
    assert loaded.adv_config.free_replays == 2 and loaded.adv_config == config


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(free_replays=0), "`free_replays` must be an integer >= 1"),
        (dict(free_replays=2.5), "Received: free_replays=2.5"),
        (dict(free_replays=2), "pgd_epsilon=None"),
        (dict(free_replays=2, pgd_epsilon=0.1, adv_loss="trades"), "adv_loss='trades'"),
        (dict(free_replays=2, pgd_epsilon=0.1, pgd_iterations=3), "pgd_iterations=3"),
    ],
)
def test_free_training_rejects_bad_settings(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        keras_advreg.AdvConfig(**fields)


# --------------------------------------------------------------------------- NSL's functional API
def test_adversarial_loss_matches_nsl_and_the_hand_computed_fgsm():
    import tensorflow as tf

    from keras_advreg.backend.nsl import nsl_configs
    from keras_advreg.training import adversarial_loss

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    w = np.array([[1.0], [-2.0]], "float32")
    model.set_weights([w, np.zeros(1, "float32")])
    loss_fn = keras.losses.MeanSquaredError()
    x = tf.constant([[0.2, 0.4], [0.6, 0.1]], tf.float32)
    y = tf.constant([[1.0], [0.0]], tf.float32)
    config = keras_advreg.AdvConfig(adv_step_size=0.1, adv_grad_norm="infinity")
    # By hand: d loss / dx = 2/n * (xw - y) w^T; FGSM moves x by 0.1 * sign of it.
    err = x.numpy() @ w - y.numpy()
    x_adv = x.numpy() + 0.1 * np.sign(err @ w.T)
    expected = float(np.mean((x_adv @ w - y.numpy()) ** 2))
    ours = adversarial_loss(x, y, model, loss_fn, adv_config=config)
    assert float(ours) == pytest.approx(expected, rel=1e-5)
    # With a precomputed labeled loss and its tape (NSL's custom-loop pattern), and with NSL's
    # config object: the same.
    with tf.GradientTape() as tape:
        tape.watch(x)
        labeled = loss_fn(y, model(x))
    nsl_config = nsl_configs.make_adv_reg_config(adv_step_size=0.1, adv_grad_norm="infinity")
    reused = adversarial_loss(
        x, y, model, loss_fn, adv_config=nsl_config, labeled_loss=labeled, gradient_tape=tape
    )
    assert float(reused) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="adv_loss='labeled' and no free_replays"):
        adversarial_loss(x, y, model, loss_fn, adv_config=config.replace(adv_loss="trades"))
