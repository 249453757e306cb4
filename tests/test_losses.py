"""Virtual adversarial training (`AdvConfig(adv_loss="vat")`) and unlabeled examples.

The VAT term equals a hand-computed KL: on a linear softmax model the power iteration
converges to the top eigenvector of the KL's Hessian, `W (diag(p) - p p^T) W^T`
(closed form, NumPy), at the inputs and at an `AdversarialPerturbation`. Examples labeled
`-1` enter the VAT term but neither the supervised loss nor the metrics (a step on a mixed
batch: `tests/test_labeled_pass.py`). Errors before training; save/load. Backend-agnostic (marker `backends`: TensorFlow and JAX; the
training tests skip on PyTorch).
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

import keras_advreg
from keras_advreg.layers import AdversarialPerturbation

pytestmark = [
    pytest.mark.backends,
    pytest.mark.skipif(
        keras.backend.backend() not in ("tensorflow", "jax"),
        reason="AdversarialRegularization trains on TensorFlow and JAX",
    ),
]
LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
W = np.array([[1.5, -0.5, 0.2], [0.3, 0.9, -1.2]])
B = np.array([0.1, -0.2, 0.05])
X = np.array([[0.4, -0.3], [-0.2, 0.5]], dtype="float32")


def _linear(at_layer: bool):
    layers = [keras.Input((2,))]
    if at_layer:
        layers.append(AdversarialPerturbation(relative=False, name="perturbation"))
    layers.append(keras.layers.Dense(3, name="logits"))
    model = keras.Sequential(layers)
    model.get_layer("logits").set_weights([W.astype("float32"), B.astype("float32")])
    return model


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kl(p, q):
    return float((p * (np.log(p) - np.log(q))).sum())


def _vat_candidates(x, eps):
    """Per example: KL(p || p(x + eps v)) and KL(p || p(x - eps v)), v the top eigenvector
    of the Hessian in r of KL(p || softmax((x + r) W + b)) at r = 0."""
    out = []
    for row in x.astype("float64"):
        p = _softmax(row @ W + B)
        hessian = W @ (np.diag(p) - np.outer(p, p)) @ W.T
        values, vectors = np.linalg.eigh(hessian)
        assert values[-1] > 1.5 * abs(values[0])  # 30 power steps: error ~ (1/1.5)^30
        v = vectors[:, -1]
        out.append([_kl(p, _softmax((row + s * eps * v) @ W + B)) for s in (1.0, -1.0)])
    return out


@pytest.mark.parametrize(
    "entropy, balance", [(0.0, 0.0), (0.7, 0.0), (0.7, 0.4)], ids=["vat", "entmin", "balance"]
)
@pytest.mark.parametrize("at_layer", [False, True], ids=["inputs", "layer"])
def test_vat_term_equals_the_hand_computed_kl(at_layer, entropy, balance):
    config = keras_advreg.AdvConfig(
        adv_loss="vat", multiplier=0.5, adv_step_size=0.8, pgd_iterations=30, vat_xi=1e-3,
        vat_entropy=entropy, vat_balance=balance,
    )  # fmt: skip
    model = keras_advreg.AdversarialRegularization(_linear(at_layer), adv_config=config)
    model.compile("sgd", LOGITS_CE, metrics=["accuracy"])
    y = np.array([1, -1])  # the second example is unlabeled
    logs = model.evaluate(X, y, batch_size=2, verbose=0, return_dict=True)
    candidates = _vat_candidates(X, 0.8)
    # With `vat_entropy`, plus that weight times the mean entropy of the clean predictions;
    # with `vat_balance`, plus that weight times KL(their mean || uniform) = log 3 - H(mean).
    p = [_softmax(row.astype("float64") @ W + B) for row in X]
    h = np.mean([-np.sum(q * np.log(q)) for q in p])
    mean = np.mean(p, axis=0)
    h_mean = -np.sum(mean * np.log(mean))
    sums = [
        0.5 * (np.mean(c) + entropy * h + balance * (np.log(3) - h_mean))
        for c in itertools.product(*candidates)
    ]
    got = logs["scaled_adversarial_loss"]
    assert min(abs(got - s) for s in sums) < 2e-3 * max(sums), (got, sums)
    assert min(abs(v) for v in sums) > 1e-3  # the term is not trivially 0
    # Only the labeled example enters the supervised loss and the accuracy.
    p0 = _softmax(X[0].astype("float64") @ W + B)
    assert logs["labeled_loss"] == pytest.approx(-np.log(p0[1]), rel=1e-5)
    assert logs["accuracy"] == float(np.argmax(p0) == 1)


@pytest.mark.parametrize("step", ["fit", "evaluate"])
def test_metrics_count_only_labeled_examples(step):
    # x0 is predicted class 0, x1 class 1 (logits X @ W + B, by hand: [0.61, -0.67, 0.49]
    # and [-0.05, 0.35, -0.59]). Labeled: x0 as 0 (right), x1 as 0 (wrong); three unlabeled
    # copies of x0, which an accuracy over the whole batch would count as right (their
    # masked label is 0): 0.8 instead of 0.5 (and weighted by the sample weights, 18/19
    # instead of 3/4).
    x = X[[0, 1, 0, 0, 0]]
    y = np.array([0, 0, -1, -1, -1])
    weights = np.array([3.0, 1.0, 5.0, 5.0, 5.0], dtype="float32")
    config = keras_advreg.AdvConfig(adv_loss="vat", multiplier=1.0, adv_step_size=0.1)
    model = keras_advreg.AdversarialRegularization(_linear(False), adv_config=config)
    model.compile(
        keras.optimizers.SGD(0.0),
        LOGITS_CE,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="weighted_acc")],
    )
    if step == "fit":
        logs = model.fit(x, y, sample_weight=weights, batch_size=5, verbose=0).history
        logs = {k: v[-1] for k, v in logs.items()}
    else:
        logs = model.evaluate(
            x, y, sample_weight=weights, batch_size=5, verbose=0, return_dict=True
        )
    assert logs["acc"] == pytest.approx(0.5)
    assert logs["weighted_acc"] == pytest.approx(3.0 / 4.0)


def _entropy_after_one_step(base, x, y, entropy):
    config = keras_advreg.AdvConfig(
        adv_loss="vat", multiplier=1.0, adv_step_size=1e-4, vat_entropy=entropy
    )
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile(keras.optimizers.SGD(0.5), LOGITS_CE)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    p = keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(x, verbose=0)))
    return float(np.mean(-np.sum(p * np.log(p), axis=1)))


@pytest.mark.parametrize("batch_norm", [False, True], ids=["dense", "batch-norm"])
def test_vat_entropy_term_trains_the_predictions_towards_confidence(batch_norm):
    # One labeled example, seven unlabeled; the VAT radius is tiny (its KL ~ 0), so what
    # the entropy weight changes is the entropy term's own gradient, through the clean
    # predictions (with batch normalization: the mixed batch's pass beside the labeled one).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 2)).astype("float32")
    y = np.array([0] + [-1] * 7)

    def base():
        keras.utils.set_random_seed(3)
        layers = [keras.Input((2,))]
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
        return keras.Sequential(layers + [keras.layers.Dense(3)])

    without = _entropy_after_one_step(base(), x, y, 0.0)
    with_term = _entropy_after_one_step(base(), x, y, 1.0)
    assert with_term < without - 1e-3, (with_term, without)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("balance", [0.0, 1.0], ids=["off", "on"])
def test_vat_balance_step_equals_the_hand_computed_one(balance, weighted):
    # Eight unlabeled points and a Dense layer with kernel 0 and bias b = (2, 0, 0): every
    # prediction is m = softmax(b), so the KL term and its gradient are 0 and one SGD step
    # (rate 0.5) on w (log 3 - H(mean_i p_i)) has a closed form: with v = m * (log m + H(m)),
    # the gradient is w v for the bias and w xbar (outer) v for the kernel, xbar the mean
    # of the x_i (with sample weights s_i: sum(s_i x_i) / sum(s_i)).
    x = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
    s = np.arange(1.0, 9.0) if weighted else np.ones(8)
    base = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    b = np.array([2.0, 0.0, 0.0])
    base.set_weights([np.zeros((2, 3), "float32"), b.astype("float32")])
    config = keras_advreg.AdvConfig(
        adv_loss="vat", multiplier=1.0, adv_step_size=1e-4, vat_balance=balance
    )
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile(keras.optimizers.SGD(0.5), LOGITS_CE)
    model.fit(
        x, np.full(8, -1), sample_weight=s.astype("float32") if weighted else None,
        batch_size=8, epochs=1, shuffle=False, verbose=0,
    )  # fmt: skip
    m = _softmax(b)
    v = balance * m * (np.log(m) + -np.sum(m * np.log(m)))
    xbar = (s[:, None] * x.astype("float64")).sum(0) / s.sum()
    kernel, bias = -0.5 * np.outer(xbar, v), b - 0.5 * v
    expected = _softmax(x.astype("float64") @ kernel + bias)
    got = _softmax(keras.ops.convert_to_numpy(model.predict(x, verbose=0)).astype("float64"))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    if balance:  # the step moves the batch towards even class shares: class 0's falls
        assert expected.mean(0)[0] < m[0] - 0.05


def test_marginal_entropy_is_the_entropy_of_the_weighted_mean_prediction():
    from keras_advreg.training.losses import marginal_entropy

    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    w = np.array([2.0, 0.0, 1.0])
    for weights, mean in [(None, p.mean(0)), (w, (2 * p[0] + p[2]) / 3)]:
        got = marginal_entropy(np.log(p).astype("float32"), weights)
        expected = -np.sum(mean * np.log(mean))
        assert float(keras.ops.convert_to_numpy(got)) == pytest.approx(expected, rel=1e-5)
    # Tiny weights: the same mean; all weights 0: no mean, entropy 0 (not NaN).
    got = marginal_entropy(np.log(p).astype("float32"), w * 1e-13)
    assert float(keras.ops.convert_to_numpy(got)) == pytest.approx(expected, rel=1e-4)
    got = marginal_entropy(np.log(p).astype("float32"), np.zeros(3))
    assert float(keras.ops.convert_to_numpy(got)) == 0.0


@pytest.mark.parametrize("name", ["vat_entropy", "vat_balance"])
def test_vat_entropy_weights_need_vat_and_a_non_negative_weight(name):
    with pytest.raises(ValueError, match=f"`{name}` must be >= 0.0. Received: {name}=-1"):
        keras_advreg.AdvConfig(adv_loss="vat", **{name: -1})
    with pytest.raises(ValueError, match=f"needs adv_loss='vat'. Received: {name}=1.0"):
        keras_advreg.AdvConfig(**{name: 1.0})


def test_vat_needs_a_classification_loss():
    model = keras_advreg.AdversarialRegularization(
        _linear(False), adv_config=keras_advreg.AdvConfig(adv_loss="vat")
    )
    with pytest.raises(
        ValueError, match=r"adv_loss='vat' needs a classification loss.*Received: loss='mse'"
    ):
        model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="`vat_xi` must be > 0.0. Received: vat_xi=0"):
        keras_advreg.AdvConfig(adv_loss="vat", vat_xi=0)


def test_vat_trains_and_round_trips_through_a_keras_file(tmp_path):
    config = keras_advreg.AdvConfig(adv_loss="vat", multiplier=1.0, adv_step_size=1.0, vat_xi=1e-2)
    model = keras_advreg.AdversarialRegularization(_linear(True), adv_config=config)
    model.compile("adam", LOGITS_CE)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 2)).astype("float32")
    y = np.where(rng.random(32) < 0.5, -1, (x[:, 0] > 0).astype("int64"))
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.array(history.history["scaled_adversarial_loss"]) > 0)
    path = tmp_path / "vat.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.adv_config == config and restored.adv_config.vat_xi == 1e-2
    assert isinstance(restored.base_model.get_layer("perturbation"), AdversarialPerturbation)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored.predict(x, verbose=0)),
        keras.ops.convert_to_numpy(model.predict(x, verbose=0)),
        atol=1e-6,
    )


def test_vat_neighbour_passes_leave_batch_statistics_to_the_clean_pass():
    # BatchNormalization on the inputs: after one step from moving_mean 0 and
    # moving_variance 1 with momentum m, only the clean batch may have moved them:
    # mean = (1 - m) * mean(x), variance = m + (1 - m) * var(x) (Keras: biased variance).
    m = 0.5
    x = np.array([[0.0, 1.0], [2.0, -1.0], [4.0, 3.0], [-2.0, 1.0]], dtype="float32")
    y = np.array([0, -1, 2, -1])
    base = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization(momentum=m),
                             keras.layers.Dense(3)])  # fmt: skip
    config = keras_advreg.AdvConfig(adv_loss="vat", multiplier=1.0, adv_step_size=3.0)
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile(keras.optimizers.SGD(0.1), LOGITS_CE)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    bn = base.layers[0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean),
                               (1 - m) * x.mean(0), rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance),
                               m + (1 - m) * x.var(0), rtol=1e-4)  # fmt: skip


def test_vat_default_xi_resolves_the_direction_in_float32():
    """On an MLP with MNIST-sized inputs, the default `vat_xi` in float32 finds the
    direction float64 arithmetic finds: the top eigenvector of the Hessian in r of
    KL(p || p(x + r)) at r = 0, J^T (diag(p) - p p^T) J (J the logits' Jacobian), so the
    VAT term equals the KL there (a finite-difference step too small for float32 gives
    a noise direction and a far smaller term)."""
    rng = np.random.default_rng(21)  # both examples confident (top probability > 0.9999)
    d, h = 784, 32
    w1 = rng.normal(0, 1 / np.sqrt(d), (d, h))
    w2 = rng.normal(0, 3 / np.sqrt(h), (h, 10))
    w2[:, 0] *= 4  # one dominant logit direction: a clear top eigenvalue
    w2 *= 2
    x = rng.random((2, d)).astype("float32")
    base = keras.Sequential([keras.Input((d,)), keras.layers.Dense(h, activation="tanh",
                             use_bias=False), keras.layers.Dense(10, use_bias=False)])  # fmt: skip
    base.set_weights([w1.astype("float32"), w2.astype("float32")])
    eps = 1.0

    def logits(row):
        return np.tanh(row @ w1) @ w2

    candidates = []
    for row in x.astype("float64"):
        p = _softmax(logits(row))
        jac = w2.T @ (np.diag(1 - np.tanh(row @ w1) ** 2) @ w1.T)  # (10, d)
        values, vectors = np.linalg.eigh(jac.T @ (np.diag(p) - np.outer(p, p)) @ jac)
        assert values[-1] > 1.5 * values[-2]  # 30 power steps: error ~ (1/1.5)^30
        v = vectors[:, -1]
        candidates.append([_kl(p, _softmax(logits(row + s * eps * v))) for s in (1.0, -1.0)])
    config = keras_advreg.AdvConfig(adv_loss="vat", multiplier=1.0, adv_step_size=eps,
                                    pgd_iterations=30)  # fmt: skip
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile("sgd", LOGITS_CE)
    logs = model.evaluate(x, np.array([-1, -1]), batch_size=2, verbose=0, return_dict=True)
    sums = [np.mean(c) for c in itertools.product(*candidates)]
    got = logs["scaled_adversarial_loss"]
    assert min(abs(got - s) for s in sums) < 1e-2 * max(sums), (got, sums)


def _moons(rng, n):
    t = rng.uniform(0, np.pi, n)
    c = rng.integers(0, 2, n)
    upper = np.c_[np.cos(t), np.sin(t)]
    lower = np.c_[1 - np.cos(t), 0.5 - np.sin(t)]
    x = np.where(c[:, None] == 0, upper, lower) + rng.normal(0, 0.1, (n, 2))
    return x.astype("float32"), c


@pytest.mark.slow
def test_vat_learns_two_moons_from_ten_labels():
    """The cluster assumption VAT exploits: with 10 labels and 1000 unlabeled points of two
    interleaved half-moons, the labeled examples alone leave a boundary that cuts the moons
    (about 70% test accuracy), VAT's smoothness along the data follows them (>= 95%)."""
    from keras_advreg.data import semi_supervised_batches

    rng = np.random.default_rng(0)
    x_lab, y_lab = _moons(rng, 10)
    x_unl, _ = _moons(rng, 1000)
    x_test, y_test = _moons(rng, 1000)

    def net():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(100, activation="relu"),
                                 keras.layers.Dense(100, activation="relu"),
                                 keras.layers.Dense(2)])  # fmt: skip

    plain = net()
    plain.compile(keras.optimizers.Adam(1e-2), LOGITS_CE)
    plain.fit(x_lab, y_lab, epochs=150, verbose=0)
    base = net()
    config = keras_advreg.AdvConfig(adv_loss="vat", adv_step_size=0.3, multiplier=1.0)
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile(keras.optimizers.Adam(1e-2), LOGITS_CE)
    batches = semi_supervised_batches(x_lab, y_lab, x_unl, batch_size=110, labeled_batch_size=10)
    model.fit(batches, epochs=20, verbose=0)

    def accuracy(m):
        return float(np.mean(np.argmax(m.predict(x_test, verbose=0), -1) == y_test))

    assert accuracy(plain) < 0.85 and accuracy(base) >= 0.95, (accuracy(plain), accuracy(base))
