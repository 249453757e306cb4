"""Attack objects: lookup, serialization, validation, seeds, and results with known answers."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import keras_advreg
from keras_advreg import attacks

BOX = dict(clip_value_min=0.0, clip_value_max=1.0)


def linear_multiclass(seed=0, classes=4, dims=6):
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((dims,)), keras.layers.Dense(classes)])
    w = rng.normal(size=(dims, classes)).astype("float32")
    b = rng.normal(size=classes).astype("float32") * 0.1
    model.set_weights([w, b])
    return model, w, b


def minimal_linf(x, y, w, b):
    """Exact minimal l-inf perturbation of a linear classifier (no box): min over j of
    (z_y - z_j) / ||w_y - w_j||_1."""
    z = x @ w + b
    out = []
    for zi, yi in zip(z, y, strict=True):
        gaps = [
            (zi[yi] - zi[j]) / np.abs(w[:, yi] - w[:, j]).sum() for j in range(len(zi)) if j != yi
        ]
        out.append(min(gaps))
    return np.array(out)


def test_get_by_name_config_and_instance():
    pgd = attacks.get("pgd", epsilon=0.3, steps=40)
    assert isinstance(pgd, attacks.PGD) and pgd.describe() == "PGD-40"
    assert attacks.get("APGD_CE").loss == "ce" and attacks.get("apgd-dlr").loss == "dlr"
    assert attacks.get(pgd) is pgd
    restored = attacks.deserialize(attacks.serialize(pgd))
    assert restored == pgd and restored is not pgd
    assert attacks.PGD.from_config(pgd.get_config()) == pgd
    fast = attacks.get("autoattack-fast", epsilon=(0.1, 0.2))
    assert fast.version == "fast" and fast.epsilons == (0.1, 0.2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: attacks.get("deepfool"), r"`attack` must be one of \['apgd', .*'square'\]"),
        (lambda: attacks.PGD(epsilon=2.0, **BOX), "at most the size of the clip range"),
        (lambda: attacks.APGD(loss="kl"), "`loss` must be one of 'ce', 'dlr'"),
        (lambda: attacks.Square(norm="l2"), "`norm` must be one of 'infinity'"),
        (lambda: attacks.APGD(steps=0), "`steps` must be an integer >= 1"),
        (lambda: attacks.PGD(seed=1.5), "`seed` must be an integer"),
    ],
)
def test_bad_settings_fail_at_construction(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_attacks_that_cannot_run_on_the_model_fail_before_work():
    two, _, _ = linear_multiclass(classes=2)
    x = np.random.default_rng(0).random((4, 6)).astype("float32")
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="at least 3 classes"):
        keras_advreg.evaluate_robustness(two, (x, y), attack="apgd-dlr")
    three, _, _ = linear_multiclass(classes=3)
    with pytest.raises(ValueError, match="at least 4 classes"):
        keras_advreg.evaluate_robustness(three, (x, y), attack="apgd-t")
    y4 = np.array([0, 1, 2, 3])
    four, _, _ = linear_multiclass(classes=4)
    report = keras_advreg.evaluate_robustness(four, (x, y4), attack="apgd-t", warn=False)
    assert report.broken_by[0.1].keys() == {"apgd-t"}  # 9 targets asked, the 3 others run
    with pytest.raises(ValueError, match="needs image features"):
        keras_advreg.evaluate_robustness(three, (x, y), attack="square", **BOX)
    report = keras_advreg.evaluate_robustness(three, (x, y), attack="autoattack", warn=False)
    assert set(report.config["skipped"]) == {"APGD-T-100x9", "Square-5000"}  # left out, said so


@pytest.mark.parametrize("attack", ["apgd-ce", "autoattack"])
def test_apgd_finds_the_exact_minimal_perturbation_of_a_linear_model(attack):
    model, w, b = linear_multiclass()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype("float32")
    y = np.argmax(x @ w + b, axis=1)  # all correct
    radius = minimal_linf(x, y, w, b)
    above = keras_advreg.evaluate_robustness(
        model, (x, y), epsilons=float(radius.max() * 1.01), attack=attack, warn=False
    )
    assert list(above.accuracy.values()) == [0.0]
    eps = float(np.median(radius))
    report = keras_advreg.evaluate_robustness(
        model, (x, y), epsilons=eps, attack=attack, warn=False
    )
    expected = np.mean(radius > eps * 1.0001)
    assert abs(report.accuracy[eps] - expected) <= 1 / 40  # the one at the median itself


def test_returned_examples_stay_in_the_ball_and_the_box():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, "relu"),
            keras.layers.Dense(5),
        ]
    )
    x = np.random.default_rng(0).random((20, 8, 8, 1)).astype("float32")
    y = np.arange(20) % 5
    for attack in ("fgsm", "pgd", "apgd-ce", "apgd-t", "square", "autoattack"):
        kwargs = dict(queries=50) if attack == "square" else {}
        obj = attacks.get(attack, epsilon=0.3, **BOX, **kwargs)
        x_adv, _, _ = keras_advreg.generate_adversarial_examples(model, x, y, attack=obj)
        assert np.all(np.abs(x_adv - x) <= 0.3 + 1e-6), attack
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0, attack


def test_accuracy_falls_with_epsilon_and_apgd_is_not_weaker_than_pgd():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((256, 10)).astype("float32")
    y = (x[:, :5].sum(1) > x[:, 5:].sum(1)).astype("int64") + 2 * (x[:, 0] > 0.5)
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(32, "relu"), keras.layers.Dense(4)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=30, verbose=0)
    eps = (0.02, 0.05, 0.1)
    pgd = keras_advreg.evaluate_robustness(
        model, (x, y), eps, attack="pgd", pgd_steps=40, warn=False
    )
    apgd = keras_advreg.evaluate_robustness(model, (x, y), eps, attack="apgd-ce", warn=False)
    values = [apgd.accuracy[e] for e in eps]
    assert values == sorted(values, reverse=True)
    # One APGD-CE run may miss an example PGD-40 breaks (1/256 here); the cascade may not.
    assert all(apgd.accuracy[e] <= pgd.accuracy[e] + 1 / 256 for e in eps)
    auto = keras_advreg.evaluate_robustness(model, (x, y), eps, attack="autoattack", warn=False)
    assert all(auto.accuracy[e] <= pgd.accuracy[e] for e in eps)


class _Quantize(keras.layers.Layer):
    """Rounds its input in the forward pass: input gradients are exactly zero."""

    def call(self, x):
        return keras.ops.round(x * 4.0) / 4.0


def test_square_breaks_a_masked_model_and_the_report_says_so():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Flatten()(_Quantize()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(h))
    rng = np.random.default_rng(0)
    x = rng.random((30, 6, 6, 1)).astype("float32")
    y = np.argmax(np.asarray(model(x)), axis=1)
    apgd = keras_advreg.evaluate_robustness(model, (x, y), 0.3, attack="apgd-ce", warn=False, **BOX)
    auto = attacks.AutoAttack(0.3, seed=0, **BOX)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = keras_advreg.evaluate_robustness(model, (x, y), attack=auto)
    assert apgd.zero_gradient_fraction == 1.0  # only its random start can break anything
    assert report.accuracy[0.3] < apgd.accuracy[0.3] - 0.2
    assert report.broken_by[0.3]["square"] > 0.2
    assert any("gradients are masked" in str(w.message) for w in caught)


def test_seeds_repeat_and_differ():
    model, w, b = linear_multiclass()
    x = np.random.default_rng(3).normal(size=(64, 6)).astype("float32")
    y = np.argmax(x @ w + b, axis=1)
    pgd = attacks.PGD(0.3, steps=1, step_size=0.01, seed=5)  # the random start decides
    run = lambda a: keras_advreg.evaluate_robustness(model, (x, y), attack=a, warn=False)  # noqa: E731
    assert run(pgd).accuracy == run(pgd).accuracy
    unseeded = attacks.PGD(0.3, steps=1, step_size=0.01)
    results = set()
    for s in range(4):
        keras.utils.set_random_seed(s)
        results.add(run(unseeded).accuracy[0.3])
        keras.utils.set_random_seed(s)
        assert run(unseeded).accuracy[0.3] in results  # the global seed repeats a run
    assert len(results) > 1  # and different global seeds give different starts


def test_restarts_only_ever_lower_accuracy():
    model, w, b = linear_multiclass()
    x = np.random.default_rng(4).normal(size=(64, 6)).astype("float32")
    y = np.argmax(x @ w + b, axis=1)
    one = attacks.PGD(0.2, steps=2, step_size=0.01, seed=1)
    five = one.replace(restarts=5)
    a1 = keras_advreg.evaluate_robustness(model, (x, y), attack=one, warn=False).accuracy[0.2]
    a5 = keras_advreg.evaluate_robustness(model, (x, y), attack=five, warn=False).accuracy[0.2]
    assert a5 <= a1
