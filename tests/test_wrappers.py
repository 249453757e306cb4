"""AdversarialRegularization on Keras 3: exact values, data formats, errors, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import MODEL_KINDS, make_model

import keras_advreg
from keras_advreg import AdvConfig, AdversarialRegularization

LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# A linear 2-class model z = x W + b. For sparse cross-entropy the input gradient of example i
# is (p_i1 - [y_i = 1]) * d / N with d = W[:, 1] - W[:, 0], so its direction is s_i * d with
# s_i = +1 for label 0 and -1 for label 1, whatever the probabilities: FGSM by hand.
W = np.array([[0.5, 1.5], [1.0, -1.0], [0.2, 0.7]], "float32")
B = np.array([0.1, -0.2], "float32")
D = W[:, 1] - W[:, 0]  # [1.0, -2.0, 0.5]
X = np.array([[0.2, 0.4, 0.6], [0.9, 0.1, 0.3], [0.5, 0.5, 0.5], [0.0, 1.0, 0.2]], "float32")
Y = np.array([0, 1, 1, 0])
S = np.where(Y == 0, 1.0, -1.0)[:, None]
HAND_DIRECTIONS = {
    "infinity": S * np.sign(D),
    "l2": S * D / np.linalg.norm(D),
    "l1": S * np.array([0.0, -1.0, 0.0]),  # all the l1 budget on the largest |d_j|
}


def _linear(kind):
    base = make_model(kind, input_shape=(3,), num_classes=2, hidden=0)
    base.set_weights([W, B])
    return base


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ce_and_grads(x, y):
    p = _softmax(x @ W + B)
    n = len(y)
    ce = -np.log(p[np.arange(n), y]).mean()
    delta = (p - np.eye(2)[y]) / n
    return ce, x.T @ delta, delta.sum(axis=0)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("norm", ["infinity", "l2", "l1"])
def test_fgsm_step_and_sgd_update_by_hand(kind, norm):
    eps, multiplier, lr = 0.1, 0.5, 0.1
    model = AdversarialRegularization(
        _linear(kind),
        adv_config=AdvConfig(multiplier=multiplier, adv_step_size=eps, adv_grad_norm=norm),
    )
    model.compile(keras.optimizers.SGD(lr), loss=LOGITS_CE)
    x_adv_expected = X + eps * HAND_DIRECTIONS[norm]

    x_adv, y_out = model.perturb_on_batch((X, Y))
    np.testing.assert_allclose(x_adv, x_adv_expected, atol=1e-6)
    np.testing.assert_array_equal(y_out, Y)

    ce, grad_w, grad_b = _ce_and_grads(X, Y)
    ce_adv, grad_w_adv, grad_b_adv = _ce_and_grads(x_adv_expected, Y)
    logs = model.train_on_batch(X, Y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], ce + multiplier * ce_adv, rtol=1e-5)
    np.testing.assert_allclose(logs["scaled_adversarial_loss"], multiplier * ce_adv, rtol=1e-5)
    np.testing.assert_allclose(logs["labeled_loss"], ce, rtol=1e-5)  # NSL's clean term
    new_w, new_b = model.base_model.get_weights()
    np.testing.assert_allclose(new_w, W - lr * (grad_w + multiplier * grad_w_adv), atol=1e-6)
    np.testing.assert_allclose(new_b, B - lr * (grad_b + multiplier * grad_b_adv), atol=1e-6)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_dict_and_tuple_data_train_identically(kind):
    config = AdvConfig(multiplier=0.3, adv_step_size=0.05, adv_grad_norm="infinity")
    results = []
    for as_dict in (False, True):
        model = AdversarialRegularization(_linear(kind), adv_config=config)
        model.compile(keras.optimizers.SGD(0.1), loss=LOGITS_CE, metrics=["accuracy"])
        data = {"feature": X, "label": Y} if as_dict else (X, Y)
        ds = tf.data.Dataset.from_tensor_slices(data).batch(2)
        history = model.fit(ds, epochs=2, verbose=0, validation_data=ds)
        results.append((history.history, model.base_model.get_weights()))
    (h_tuple, w_tuple), (h_dict, w_dict) = results
    assert (
        set(h_tuple)
        == set(h_dict)
        >= {
            "loss",
            "accuracy",
            "scaled_adversarial_loss",
            "val_loss",
            "val_accuracy",
            "val_scaled_adversarial_loss",
        }
    )
    for key in h_tuple:
        np.testing.assert_allclose(h_tuple[key], h_dict[key], rtol=1e-5)
    for a, b in zip(w_tuple, w_dict):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_sample_weights_of_keras_shape_weight_both_terms():
    config = AdvConfig(multiplier=0.5, adv_step_size=0.1, adv_grad_norm="infinity")
    weights = np.array([1.0, 0.0, 2.0, 0.0], "float32")
    keep = weights > 0
    losses = {}
    for name, (x, y, w) in {
        "weighted": (X, Y, weights),
        "subset": (X[keep], Y[keep], weights[keep]),
    }.items():
        model = AdversarialRegularization(_linear("functional"), adv_config=config)
        model.compile(keras.optimizers.SGD(0.0), loss=LOGITS_CE)
        losses[name] = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
    # sum_over_batch_size: zero-weight rows add nothing to the sum but count in the size.
    for key in ("loss", "scaled_adversarial_loss"):
        np.testing.assert_allclose(losses["weighted"][key], losses["subset"][key] / 2, rtol=1e-5)


def test_sample_weight_key_in_dict_data():
    model = AdversarialRegularization(
        _linear("sequential"),
        sample_weight_key="weight",
        adv_config=AdvConfig(adv_step_size=0.1, adv_grad_norm="infinity"),
    )
    model.compile(keras.optimizers.SGD(0.0), loss=LOGITS_CE)
    batch = {"feature": X, "label": Y}
    zero = model.train_on_batch({**batch, "weight": np.zeros(4, "float32")}, return_dict=True)
    assert zero["loss"] == 0.0 and zero["scaled_adversarial_loss"] == 0.0
    one = model.train_on_batch({**batch, "weight": np.ones(4, "float32")}, return_dict=True)
    assert one["loss"] > 0.1 and one["scaled_adversarial_loss"] > 0.01


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_random_init_pgd_trains_inside_fit(kind):
    # NSL 1.4.0 crashes on random_init inside fit (its random draw needs a static batch size).
    config = AdvConfig(
        adv_step_size=0.05,
        adv_grad_norm="l2",
        pgd_iterations=3,
        pgd_epsilon=0.1,
        random_init=True,
    )
    model = AdversarialRegularization(_linear(kind), adv_config=config)
    model.compile("sgd", loss=LOGITS_CE)
    history = model.fit(X, Y, batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    x_adv, _ = model.perturb_on_batch((X, Y))
    norms = np.linalg.norm(x_adv - X, axis=1)
    assert np.all(norms <= 0.1 + 1e-5) and np.all(norms > 0)


def test_pgd_linf_respects_epsilon_and_clipping():
    model = AdversarialRegularization(
        _linear("functional"),
        adv_config=AdvConfig(
            adv_step_size=0.05,
            adv_grad_norm="infinity",
            pgd_iterations=5,
            pgd_epsilon=0.08,
            clip_value_min=0.0,
            clip_value_max=1.0,
        ),
    )
    model.compile("sgd", loss=LOGITS_CE)
    x_adv, _ = model.perturb_on_batch((X, Y))
    assert np.abs(x_adv - X).max() <= 0.08 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    # The l-inf steps push along sign(d) (clipped at the box), so interior coordinates move by eps.
    interior = (X > 0.1) & (X < 0.9)
    np.testing.assert_allclose(
        (x_adv - X)[interior], (0.08 * HAND_DIRECTIONS["infinity"])[interior], atol=1e-6
    )


def test_perturb_on_batch_overrides_and_dict_format():
    model = AdversarialRegularization(
        _linear("sequential"), adv_config=AdvConfig(adv_step_size=0.1, adv_grad_norm="l2")
    )
    model.compile("sgd", loss=LOGITS_CE)
    out = model.perturb_on_batch(
        {"feature": X, "label": Y}, adv_step_size=0.2, adv_grad_norm="infinity"
    )
    assert sorted(out) == ["feature", "label"]
    np.testing.assert_allclose(out["feature"], X + 0.2 * HAND_DIRECTIONS["infinity"], atol=1e-6)
    with pytest.raises(ValueError, match="Unknown perturbation setting"):
        model.perturb_on_batch((X, Y), step=0.1)


def test_multi_input_functional_routed_by_input_name():
    a = keras.Input((2,), name="a")
    b = keras.Input((3,), name="b")
    out = keras.layers.Dense(2)(keras.layers.Concatenate()([a, b]))
    base = keras.Model([a, b], out)
    model = AdversarialRegularization(
        base, adv_config=AdvConfig(adv_step_size=0.1, adv_grad_norm="infinity")
    )
    model.compile("adam", loss=LOGITS_CE, metrics=["accuracy"])
    rng = np.random.default_rng(0)
    data = {
        "b": rng.random((16, 3), dtype="float32"),
        "label": rng.integers(0, 2, 16),
        "a": rng.random((16, 2), dtype="float32"),
    }
    history = model.fit(data, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    adv = model.perturb_on_batch(data)
    for key in ("a", "b"):
        np.testing.assert_allclose(np.abs(adv[key] - data[key]), 0.1, atol=1e-6)
    np.testing.assert_allclose(
        model.predict({"a": data["a"], "b": data["b"]}, verbose=0),
        base.predict([data["a"], data["b"]], verbose=0),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match=r"input\(s\) \['b'\] are missing"):
        model.fit({"a": data["a"], "c": data["b"], "label": data["label"]}, verbose=0)


def test_two_outputs_with_two_label_keys():
    inputs = keras.Input((3,), name="feature")
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    base = keras.Model(
        inputs,
        [keras.layers.Dense(2, name="digit")(hidden), keras.layers.Dense(3, name="colour")(hidden)],
    )
    model = AdversarialRegularization(
        base,
        label_keys=("digit_label", "colour_label"),
        adv_config=AdvConfig(adv_step_size=0.05, adv_grad_norm="infinity"),
    )
    model.compile(
        "adam",
        loss={"digit": LOGITS_CE, "colour": LOGITS_CE},
        loss_weights={"digit": 1.0, "colour": 0.5},
        metrics={"digit": ["accuracy"], "colour": ["accuracy"]},
    )
    rng = np.random.default_rng(1)
    data = {
        "feature": rng.random((16, 3), dtype="float32"),
        "digit_label": rng.integers(0, 2, 16),
        "colour_label": rng.integers(0, 3, 16),
    }
    # Each label reaches its own output: the clean per-output losses equal cross-entropy
    # computed by hand from the base model's logits (SGD with learning rate 0: nothing moves).
    digit_logits, colour_logits = (np.asarray(t) for t in base(data["feature"]))

    def cross_entropy(logits, labels):
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return -np.log(p[np.arange(len(labels)), labels]).mean()

    ce_digit = cross_entropy(digit_logits, data["digit_label"])
    ce_colour = cross_entropy(colour_logits, data["colour_label"])
    model.optimizer.learning_rate.assign(0.0)
    logs = model.train_on_batch(data, return_dict=True)
    np.testing.assert_allclose(logs["digit_loss"], ce_digit, rtol=1e-5)
    np.testing.assert_allclose(logs["colour_loss"], ce_colour, rtol=1e-5)
    np.testing.assert_allclose(
        logs["loss"] - logs["scaled_adversarial_loss"], ce_digit + 0.5 * ce_colour, rtol=1e-5
    )
    assert logs["scaled_adversarial_loss"] > 0
    history = model.fit(data, batch_size=8, epochs=1, verbose=0)
    assert {"digit_accuracy", "colour_accuracy", "scaled_adversarial_loss"} <= set(history.history)


def test_save_and_reload_round_trip_and_resume(tmp_path):
    model = AdversarialRegularization(
        _linear("functional"),
        adv_config=AdvConfig(multiplier=0.3, adv_step_size=0.05, adv_grad_norm="l2"),
    )
    model.compile("adam", loss=LOGITS_CE, metrics=["accuracy"])
    model.fit(X, Y, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)  # safe mode, no custom_objects
    assert isinstance(restored, AdversarialRegularization)
    assert restored.adv_config == model.adv_config
    np.testing.assert_allclose(
        restored.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6
    )
    # Resuming continues from the same optimizer state: one more step gives the same weights.
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) > 0
    model.train_on_batch(X, Y)
    restored.train_on_batch(X, Y)
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_subclassed_base_round_trips(tmp_path):
    model = AdversarialRegularization(_linear("subclassed"))
    model.compile("sgd", loss=LOGITS_CE)
    model.fit(X, Y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        restored.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6
    )


def test_model_checkpoint_during_fit_and_base_export(tmp_path):
    model = AdversarialRegularization(_linear("sequential"))
    model.compile("adam", loss=LOGITS_CE, metrics=["accuracy"])
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="loss")
    model.fit(X, Y, epochs=2, verbose=0, callbacks=[checkpoint])
    restored = keras.models.load_model(tmp_path / "best.keras")
    np.testing.assert_allclose(
        restored.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6
    )
    model.save_base_model(tmp_path / "base.keras")
    base = keras.models.load_model(tmp_path / "base.keras")
    assert not isinstance(base, AdversarialRegularization)
    np.testing.assert_allclose(base.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6)


def test_get_config_from_config():
    model = AdversarialRegularization(
        _linear("functional"),
        label_keys=("y",),
        sample_weight_key="w",
        adv_config=AdvConfig(multiplier=0.1, adv_step_size=0.3, adv_grad_norm="l1"),
    )
    clone = AdversarialRegularization.from_config(model.get_config())
    assert clone.label_keys == ("y",) and clone.sample_weight_key == "w"
    assert clone.adv_config == model.adv_config
    assert clone.base_model is not model.base_model


# ---------------------------------------------------------------------------------- errors
def test_error_unknown_norm_and_negative_step():
    with pytest.raises(
        ValueError, match=r"`adv_grad_norm` must be one of .*Received: adv_grad_norm='L3'"
    ):
        AdversarialRegularization(_linear("functional"), adv_config={"adv_grad_norm": "L3"})
    with pytest.raises(
        ValueError, match=r"`adv_step_size` must be >= 0.0. Received: adv_step_size=-0.1"
    ):
        AdversarialRegularization(_linear("functional"), adv_config={"adv_step_size": -0.1})


def test_error_pgd_epsilon_with_l1():
    with pytest.raises(ValueError, match="NSL can only project"):
        keras_advreg.make_adv_reg_config(adv_grad_norm="l1", pgd_epsilon=0.1, pgd_iterations=3)


def test_error_more_label_keys_than_outputs():
    with pytest.raises(
        ValueError, match=r"more keys than `base_model` has outputs: 2 label keys for 1"
    ):
        AdversarialRegularization(_linear("functional"), label_keys=("a", "b"))


def test_error_fewer_label_keys_than_outputs_before_training():
    inputs = keras.Input((3,), name="feature")
    base = keras.Model(
        inputs, [keras.layers.Dense(2, name="a")(inputs), keras.layers.Dense(2)(inputs)]
    )
    model = AdversarialRegularization(base, label_keys=("a_label",))
    model.compile("sgd", loss=LOGITS_CE)
    with pytest.raises(ValueError, match=r"2 outputs .* and 1 label key\(s\).*\['a_label'\]"):
        model.fit({"feature": X, "a_label": Y}, verbose=0)
    # Tuple data names no label keys: such a model trains on `(x, (y1, y2))`.
    model = AdversarialRegularization(base, label_keys=("a_label",))
    model.compile("sgd", loss=LOGITS_CE)
    assert np.isfinite(model.fit(X, (Y, Y), verbose=0).history["loss"][0])


def test_error_label_key_missing_from_data():
    model = AdversarialRegularization(_linear("functional"), label_keys="digit")
    model.compile("sgd", loss=LOGITS_CE)
    with pytest.raises(
        ValueError, match=r"label key\(s\) `label_keys=\['digit'\]`.*\['feature', 'label'\]"
    ):
        model.fit({"feature": X, "label": Y}, verbose=0)


def test_error_integer_only_features_before_training():
    model = AdversarialRegularization(make_model("functional", input_shape=(3,), num_classes=2))
    model.compile("sgd", loss=LOGITS_CE)
    with pytest.raises(ValueError, match=r"floating-point features to perturb.*uint8"):
        model.fit((X * 255).astype("uint8"), Y, verbose=0)


def test_error_nsl_compile_order_and_non_model():
    model = AdversarialRegularization(_linear("functional"))
    with pytest.raises(ValueError, match="Keras 3's order"):
        model.compile("sgd", LOGITS_CE, ["accuracy"])
    with pytest.raises(TypeError, match="`base_model` must be a Keras 3 `keras.Model`"):
        AdversarialRegularization(lambda x: x)


@pytest.mark.parametrize(
    "config",
    [
        AdvConfig(multiplier=0.5, adv_step_size=0.1, adv_grad_norm="infinity"),
        AdvConfig(adv_step_size=0.05, adv_grad_norm="l2", pgd_iterations=3, pgd_epsilon=0.1),
    ],
    ids=["fgsm", "pgd"],
)
def test_xla_step_equals_the_default_step(config):
    # On GPUs Keras' jit_compile="auto" turns XLA on: the adversarial step must compile and agree.
    weights = []
    for jit_compile in (False, True):
        model = AdversarialRegularization(_linear("functional"), adv_config=config)
        model.compile(keras.optimizers.SGD(0.1), loss=LOGITS_CE, jit_compile=jit_compile)
        model.fit(X, Y, batch_size=2, epochs=1, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(weights[0][0], W)


def test_perturb_on_batch_follows_a_recompiled_loss():
    model = AdversarialRegularization(
        _linear("functional"), adv_config=AdvConfig(adv_step_size=0.1, adv_grad_norm="infinity")
    )
    model.compile("sgd", loss=LOGITS_CE)
    x_adv, _ = model.perturb_on_batch((X, Y))
    np.testing.assert_allclose(x_adv, X + 0.1 * HAND_DIRECTIONS["infinity"], atol=1e-6)
    model.compile("sgd", loss=lambda y, z: -LOGITS_CE(y, z))  # ascent on -CE is descent on CE
    x_adv, _ = model.perturb_on_batch((X, Y))
    np.testing.assert_allclose(x_adv, X - 0.1 * HAND_DIRECTIONS["infinity"], atol=1e-6)


def test_error_no_loss_before_any_work():
    model = AdversarialRegularization(_linear("functional"))
    with pytest.raises(ValueError, match=r"`perturb_on_batch` needs the loss: call `model.compile"):
        model.perturb_on_batch((X, Y))
    model.compile("sgd")
    with pytest.raises(ValueError, match=r"Training and evaluation need the loss"):
        model.fit(X, Y, verbose=0)
