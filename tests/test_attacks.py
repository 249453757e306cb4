"""Attack primitives: exact FGSM/PGD perturbations, the attacked head (logits), AttackSpec."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import EPSILONS, EXPECTED, KERNEL, MODEL_KINDS, X, Y, _dense, linear_model, make_model

from keras_advreg import attacks
from keras_advreg.attacks import generate_adversarial_examples, random_in_norm_ball
from keras_advreg.attacks.base import resolve
from keras_advreg.data.batching import _is_unbatched
from keras_advreg.evaluation import evaluate_robustness

# The linear model of conftest: d = w1 - w0 = (2, -1).
D = np.array([2.0, -1.0], "float32")
DIRECTION = {  # the unit-norm ascent direction for label 0 (label 1: the opposite)
    "infinity": np.sign(D),
    "l2": D / np.linalg.norm(D),
    "l1": np.array([1.0, 0.0], "float32"),
}


def softmax_model(head: str, scale: float):
    inputs = keras.Input((2,))
    if head == "dense":
        outputs = keras.layers.Dense(2, activation="softmax")(inputs)
    elif head == "softmax_layer":
        outputs = keras.layers.Softmax()(keras.layers.Dense(2)(inputs))
    else:
        outputs = keras.layers.Activation("softmax")(keras.layers.Dense(2)(inputs))
    model = keras.Model(inputs, outputs)
    _dense(model).set_weights([KERNEL * scale, np.zeros(2, "float32")])
    return model


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("norm", ["infinity", "l2", "l1"])
def test_fgsm_exact_on_linear_model(kind, norm):
    report = evaluate_robustness(
        linear_model(kind), (X, Y), epsilons=EPSILONS, norm=norm, attack="fgsm"
    )
    assert report.clean_accuracy == pytest.approx(0.8)
    assert report.accuracy == pytest.approx(EXPECTED[norm])
    assert report.num_examples == 5
    flipped = {e: (0.8 - a) / 0.8 for e, a in EXPECTED[norm].items()}
    assert report.attack_success_rate == pytest.approx(flipped)
    assert report.zero_gradient_fraction == 0.0
    x_adv, clean, adv = generate_adversarial_examples(
        linear_model(kind), X, Y, 0.24, norm=norm, attack="fgsm"
    )
    sign = np.where(Y == 0, 1.0, -1.0)[:, None]
    np.testing.assert_allclose(x_adv, X + 0.24 * sign * DIRECTION[norm], atol=1e-6)
    np.testing.assert_array_equal(clean, [1, 1, 1, 0, 1])
    assert np.mean(adv == Y) == pytest.approx(EXPECTED[norm][0.24])


def test_clipping_is_applied():
    x_adv, _, _ = generate_adversarial_examples(
        linear_model(), X, Y, 0.24, clip_value_min=0.0, clip_value_max=0.6, attack="fgsm"
    )
    expected = np.clip(X + 0.24 * np.where(Y == 0, 1.0, -1.0)[:, None] * np.sign(D), 0.0, 0.6)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)
    report = evaluate_robustness(
        linear_model(), (X, Y), epsilons=0.24, clip_value_min=0.0, clip_value_max=0.6, attack="fgsm"
    )
    z1 = 2 * expected[:, 0] - expected[:, 1]
    assert report.accuracy[0.24] == pytest.approx(np.mean((z1 > 0) == (Y == 1)))


@pytest.mark.parametrize("head", ["dense", "softmax_layer", "activation"])
def test_softmax_head_attacks_the_logits(head):
    # Margins of 10..70 in logits: the softmax saturates to exactly 0/1 in float32.
    model = softmax_model(head, scale=100.0)
    report = evaluate_robustness(model, (X, Y), epsilons=EPSILONS, norm="l2", attack="fgsm")
    assert report.accuracy == pytest.approx(EXPECTED["l2"])
    assert report.zero_gradient_fraction == 0.0
    assert "logits before the final softmax" in report.config["attacked"]


def test_attacking_saturated_probabilities_is_reported_not_hidden():
    model = softmax_model("dense", scale=100.0)
    with pytest.warns(UserWarning, match="gradient masking"):
        report = evaluate_robustness(
            model, (X, Y), epsilons=EPSILONS, loss="sparse_categorical_crossentropy", attack="fgsm"
        )
    # Cross-entropy on saturated probabilities has no gradient for the confident examples:
    # they cannot be moved, and robust accuracy is overestimated (the logits give 0.0).
    assert report.zero_gradient_fraction >= 0.4
    assert report.accuracy[0.24] >= 0.4 > EXPECTED["infinity"][0.24]
    assert any("all-zero input gradient" in w for w in report.warnings)


def test_subclassed_softmax_output_warns():
    class Probabilities(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return keras.ops.softmax(self.dense(x))

    model = Probabilities()
    model(X)
    model.dense.set_weights([KERNEL, np.zeros(2, "float32")])
    with pytest.warns(UserWarning, match="outputs probabilities"):
        report = evaluate_robustness(model, (X, Y), epsilons=EPSILONS, attack="fgsm")
    assert report.accuracy == pytest.approx(EXPECTED["infinity"])  # not saturated here


def test_binary_sigmoid_head():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.layers[-1].set_weights([D[:, None] * 100.0, np.zeros(1, "float32")])
    report = evaluate_robustness(model, (X, Y), epsilons=EPSILONS, norm="l1", attack="fgsm")
    assert report.accuracy == pytest.approx(EXPECTED["l1"])
    assert report.zero_gradient_fraction == 0.0


def test_compiled_once_per_configuration():
    model = linear_model()
    evaluate_robustness(model, (X, Y), epsilons=EPSILONS, batch_size=2, attack="fgsm")  # 2 + 2 + 1
    evaluate_robustness(model, (X, Y), epsilons=(0.3, 0.5), batch_size=3, attack="fgsm")
    cache = model._keras_advreg_attacks.items
    compiled = [v for k, v in cache.items() if k[0] == "compiled" and k[1].startswith("FGSM")]
    assert len(compiled) == 1
    functions = list(compiled[0]._compiled.values())  # one per noise layout: FGSM has none
    assert len(functions) == 1 and functions[0].experimental_get_tracing_count() == 1


def test_pgd_one_step_without_random_start_is_fgsm():
    for norm in ("infinity", "l2"):
        pgd = evaluate_robustness(
            linear_model(),
            (X, Y),
            epsilons=EPSILONS,
            attack=attacks.PGD(norm=norm, steps=1, step_size=1.0, random_start=False),
        )  # a step >= eps projected back onto the ball: FGSM's point (the model is linear)
        assert pgd.accuracy == pytest.approx(EXPECTED[norm])


def test_legacy_keyword_arguments_warn_and_build_the_attack():
    """The deprecated keywords give the same (hand-computed) result, and name the attack."""
    with pytest.warns(DeprecationWarning, match=r"attack=keras_advreg\.attacks\.PGD\(") as info:
        pgd = evaluate_robustness(
            linear_model(),
            (X, Y),
            epsilons=EPSILONS,
            attack="pgd",
            norm="l2",
            pgd_steps=1,
            pgd_step_size=1.0,
            random_start=False,
            warn=False,
        )
    assert pgd.accuracy == pytest.approx(EXPECTED["l2"])
    message = str(info.list[0].message)
    assert "evaluate_robustness" in message and "norm='l2'" in message and "steps=1" in message
    assert info.list[0].filename == __file__  # points at the call, not inside the library
    assert pgd.config["pgd_steps"] == 1 and pgd.config["pgd_step_sizes"] == [1.0, 1.0]


def test_new_path_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        report = evaluate_robustness(
            linear_model(),
            (X, Y),
            EPSILONS,
            attack={"class_name": "keras_advreg>FGSM", "config": {}},
        )
    assert report.accuracy == pytest.approx(EXPECTED["infinity"])


@pytest.mark.parametrize("name", attacks.names())
def test_every_attack_rejects_unknown_arguments(name):
    with pytest.raises(ValueError, match=r"Unrecognized argument.*Received: stepz=3"):
        attacks.get(name, stepz=3)


@pytest.mark.parametrize("norm", ["infinity", "l2"])
def test_pgd_stays_in_the_ball(norm):
    x = np.random.default_rng(0).random((16, 6, 6, 1)).astype("float32")
    y = np.arange(16) % 3
    model = make_model("functional", input_shape=(6, 6, 1), num_classes=3, hidden=8)
    x_adv, _, _ = generate_adversarial_examples(
        model,
        x,
        y,
        0.1,
        attack="pgd",
        norm=norm,
        pgd_steps=5,
        clip_value_min=0.0,
        clip_value_max=1.0,
    )
    delta = (x_adv - x).reshape(16, -1)
    size = np.abs(delta).max(1) if norm == "infinity" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= 0.1 + 1e-5) and np.all(size > 0.01)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_random_in_norm_ball_has_dynamic_batch():
    @tf.function(input_signature=[tf.TensorSpec([None, 5])])
    def sample(x):
        return random_in_norm_ball([x], 0.5, "l1")[0]

    out = sample(tf.zeros([7, 5])).numpy()
    assert out.shape == (7, 5) and np.all(np.abs(out).sum(1) <= 0.5 + 1e-6)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epsilons=-0.1), "`epsilons` must be >= 0"),
        (dict(epsilons=()), "`epsilons` must be a number or a non-empty"),
        (dict(epsilons=(0.1, 0.1)), "duplicates"),
        (dict(epsilons=(0.1, 0.1000001)), r"first 6 significant.*'0\.1'.*0\.1000001\)"),
        (dict(attack="cw"), "`attack` must be one of .*'fgsm'.*Received: attack='cw'"),
        (dict(norm="l3"), "`norm` must be one of 'infinity', 'l2', 'l1'. Received: norm='l3'"),
        (dict(attack="pgd", norm="l1"), "cannot be used with norm='l1'"),
        (dict(attack="pgd", pgd_steps=0), "`steps` must be an integer >= 1"),
        (dict(attack="pgd", pgd_step_size=0.0), "`step_size` must be a number > 0"),
        (dict(attack="apgd-ce", pgd_steps=5), "`pgd_steps` does not apply to attack='apgd'"),
        (dict(clip_value_min=1.0, clip_value_max=0.0), "clip_value_min` must be <="),
        (dict(batch_size=0), "`batch_size` must be an integer >= 1"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate_robustness(linear_model(), (X, Y), **kwargs)


def test_epsilons_with_one_name_are_rejected():
    with pytest.raises(ValueError, match="Received: epsilons=") as info:
        resolve("fgsm", [0.2, 1e-7, 1.00000001e-7])
    assert "`epsilons`" in str(info.value) and "'1e-07'" in str(info.value)
    assert resolve("fgsm", (0.1, 0.100001)).epsilons == (
        0.1,
        0.100001,
    )  # 6 digits differ


@pytest.mark.parametrize(
    "element, unbatched",
    [
        (((2,), (3,)), True),  # one example: 2 features, one-hot over 3 classes
        (((2,), ()), True),  # scalar label
        (((None, 2), (None, 3)), False),
        (((None, 2), (None,)), False),
        (((8, 2), (8, 3)), False),  # batch(8, drop_remainder=True)
        (((8, 2), (8,)), False),
    ],
)
def test_unbatched_datasets_are_recognized_without_a_model(element, unbatched):
    spec = tuple(tf.TensorSpec(shape, tf.float32) for shape in element)
    assert _is_unbatched(spec, None, ("label",), None) is unbatched


def test_norm_aliases():
    assert attacks.get("fgsm", norm="Linf").norm == "infinity"
    assert attacks.get("fgsm", norm="L2").norm == "l2"


def test_not_a_classifier():
    sequence = keras.Sequential([keras.Input((4, 2)), keras.layers.Dense(2)])  # (batch, 4, 2)
    with pytest.raises(ValueError, match=r"one output of shape \(batch_size, num_classes\)"):
        evaluate_robustness(sequence, (np.zeros((3, 4, 2), "float32"), np.zeros(3)), attack="fgsm")
    inputs = keras.Input((2,))
    two_heads = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)])
    with pytest.raises(ValueError, match="one output"):
        evaluate_robustness(two_heads, (X, Y), attack="fgsm")


def test_no_float_features():
    ids = keras.Sequential([keras.Input((2,), dtype="int32"), keras.layers.Dense(2)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no floating-point features"):
            evaluate_robustness(ids, (X.astype("int32"), Y), attack="fgsm")
