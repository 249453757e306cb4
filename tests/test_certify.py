"""keras_advreg.certify: the Lipschitz-margin certificate, exact on linear models, sound
under attack, and refused (ValueError) for models without a proved bound."""

import keras
import numpy as np
import pytest

import keras_advreg
from keras_advreg.certification import certify
from keras_advreg.layers import GroupSort, LipschitzConv2D, LipschitzDense

pytestmark = pytest.mark.backends


def _linear(kernel, bias=None):
    model = keras.Sequential(
        [
            keras.Input((kernel.shape[0],)),
            LipschitzDense(kernel.shape[1], use_bias=bias is not None),
        ]
    )
    model.set_weights([kernel] if bias is None else [kernel, bias])
    return model


def test_identity_logits_by_hand():
    model = _linear(np.eye(3, dtype="float32"))  # AOL leaves the identity as is: z = x
    x = np.array([[1.0, 0.0, 0.0], [0.2, 0.0, 0.1], [0.0, 0.5, 0.0], [0.3, 0.0, 0.0]], "float32")
    y = np.array([0, 0, 1, 2])  # the last one is misclassified
    report = certify(model, (x, y), epsilons=[0.1, 0.5])
    # radius = min_j (x_y - x_j) / ||e_y - e_j|| = (top - second) / sqrt(2)
    np.testing.assert_allclose(
        report.radii, [1 / np.sqrt(2), 0.1 / np.sqrt(2), 0.5 / np.sqrt(2), 0.0], rtol=1e-6
    )
    assert report.clean_accuracy == 0.75
    assert report.accuracy == {0.1: 0.5, 0.5: 0.25}
    assert report.certificate == "lipschitz-margin" and report.norm == "l2"
    assert "(z_y - z_j)" in report.description
    assert report.to_dict()["accuracy"] == {"0.1": 0.5, "0.5": 0.25}


def test_linear_model_certificate_is_exact():
    """For z = x W' + b the radius is the distance to the nearest decision boundary: a step
    just past it, towards the closest class, flips the prediction; a step just short does not."""
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(5, 4)).astype("float32"), rng.normal(size=4).astype("float32")
    model = _linear(kernel, bias)
    w = kernel / np.sqrt(np.abs(kernel @ kernel.T).sum(1))[:, None]  # AOL by hand
    x = rng.normal(size=(20, 5)).astype("float32")
    z = x @ w + bias
    y = z.argmax(1)
    report = certify(model, (x, y), epsilons=[0.0])
    for xi, yi, r in zip(x, y, report.radii):
        others = [j for j in range(4) if j != yi]
        zi = xi @ w + bias
        j = min(others, key=lambda j: (zi[yi] - zi[j]) / np.linalg.norm(w[:, yi] - w[:, j]))
        direction = (w[:, j] - w[:, yi]) / np.linalg.norm(w[:, j] - w[:, yi])
        past, short = (xi + f * r * direction for f in (1.001, 0.999))
        assert (past @ w + bias)[j] > (past @ w + bias)[yi]
        assert (short @ w + bias).argmax() == yi


def test_softmax_head_rescaling_and_textbook_bound():
    # A final softmax is dropped (margins on the logits); Rescaling(2) doubles the bound.
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Rescaling(2.0),
            LipschitzDense(3, use_bias=False),
            keras.layers.Softmax(),
        ]
    )
    model.set_weights([np.eye(3, dtype="float32")])
    x, y = np.array([[1.0, 0.0, 0.0]], "float32"), np.array([0])
    report = certify(model, (x, y), epsilons=[0.3])
    np.testing.assert_allclose(report.radii, [2.0 / (2.0 * np.sqrt(2))], rtol=1e-6)
    assert report.config["trunk_lipschitz_constant"] == 2.0
    # Ending in an activation: the textbook (z_top - z_2nd) / (sqrt(2) L) over the whole model.
    relu_last = keras.Sequential(
        [keras.Input((3,)), LipschitzDense(3, use_bias=False), GroupSort(3)]
    )
    relu_last.set_weights([np.eye(3, dtype="float32")])
    x2 = np.array([[0.0, 1.0, 0.4]], "float32")  # GroupSort(3) sorts: logits (1, 0.4, 0)
    report = certify(relu_last, (x2, np.array([0])), epsilons=[0.1])
    np.testing.assert_allclose(report.radii, [0.6 / np.sqrt(2)], rtol=1e-6)
    assert "sqrt(2) L" in report.description


def test_functional_with_nested_sequential_and_one_hot_labels():
    inputs = keras.Input((6, 6, 1))
    h = GroupSort(1 + 1)(LipschitzConv2D(4, 3)(inputs))
    logits = keras.Sequential([keras.layers.Flatten(), LipschitzDense(3)])(h)
    model = keras.Model(inputs, logits)
    x = np.random.default_rng(1).normal(size=(7, 6, 6, 1)).astype("float32")
    sparse = certify(model, (x, np.arange(7) % 3), epsilons=[0.01])
    one_hot = certify(model, (x, np.eye(3)[np.arange(7) % 3]), epsilons=[0.01])
    np.testing.assert_array_equal(sparse.radii, one_hot.radii)
    assert sparse.num_examples == 7


def test_refusals_name_the_layer_before_any_work():
    x, y = np.zeros((2, 3), "float32"), np.array([0, 1])
    plain = keras.Sequential(
        [keras.Input((3,)), LipschitzDense(4), keras.layers.Dense(2, name="plain_head")]
    )
    with pytest.raises(ValueError, match="'plain_head' \\(Dense\\).*LipschitzDense"):
        certify(plain, (x, y), 0.1)
    with pytest.raises(ValueError, match="`norm` must be 'l2'.*norm='infinity'"):
        certify(_linear(np.eye(3, dtype="float32")), (x, y), 0.1, norm="infinity")
    inputs = keras.Input((3,))
    merged = keras.layers.Add()([LipschitzDense(2)(inputs), LipschitzDense(2)(inputs)])
    with pytest.raises(ValueError, match="single chain|Add"):
        certify(keras.Model(inputs, merged), (x, y), 0.1)
    overlapping = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.MaxPooling2D(3, strides=1),
            keras.layers.Flatten(),
            LipschitzDense(2),
        ]
    )
    with pytest.raises(ValueError, match="overlapping"):
        certify(overlapping, (np.zeros((2, 4, 4, 1), "float32"), y), 0.1)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = LipschitzDense(2)

        def call(self, x):
            return 10.0 * self.dense(x)

    sub = Subclassed()
    sub(x)
    with pytest.raises(ValueError, match="subclassed model"):
        certify(sub, (x, y), 0.1)
    with pytest.raises(ValueError, match="epsilons"):
        certify(_linear(np.eye(3, dtype="float32")), (x, y), -1.0)


@pytest.mark.slow
def test_certified_points_survive_apgd_at_their_radius():
    """Soundness: APGD-CE and APGD-T (l2) at epsilon break no example certified at epsilon."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8)) * 1.5
    y = rng.integers(0, 4, 600)
    x = (centers[y] + rng.normal(size=(600, 8)) * 0.6).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((8,)),
            LipschitzDense(16),
            GroupSort(2),
            LipschitzDense(16),
            GroupSort(2),
            LipschitzDense(4),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.01),
        keras_advreg.losses.LipschitzMarginCrossEntropy(epsilon=0.5, temperature=0.5),
    )
    model.fit(x[:400], y[:400], epochs=15, batch_size=64, verbose=0)
    xt, yt = x[400:], y[400:]
    report = certify(model, (xt, yt), epsilons=[0.3, 0.6])
    for eps, fraction in report.accuracy.items():
        assert fraction > 0.2  # enough certified points to test
        held = report.radii > eps
        for attack in ("apgd", "apgd-t"):
            attacked = keras_advreg.evaluate_robustness(
                model, (xt[held], yt[held]), epsilons=eps, attack=attack, norm="l2", warn=False
            )
            assert attacked.accuracy[eps] == 1.0, (attack, eps)
    # The attack is strong enough to matter: at twice the largest radius it breaks every point.
    big = float(2 * report.radii.max())
    attacked = keras_advreg.evaluate_robustness(
        model, (xt, yt), epsilons=big, attack="apgd", norm="l2", warn=False
    )
    assert attacked.accuracy[big] == 0.0


def test_callback_logs_certified_accuracy():
    model = _linear(np.eye(3, dtype="float32"))
    model.compile("sgd", keras_advreg.losses.LipschitzMarginCrossEntropy(), metrics=["accuracy"])
    x = np.array([[1.0, 0.0, 0.0], [0.0, 0.2, 0.1], [0.0, 0.0, 1.0]], "float32")
    y = np.array([0, 1, 2])
    callback = keras_advreg.AdversarialRobustnessCallback(
        (x, y), epsilons=(0.05, 0.5), attack="fgsm", norm="l2", certify=True
    )
    with pytest.warns(UserWarning):
        history = model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    certified = certify(model, (x, y), epsilons=(0.05, 0.5))  # the weights after the epoch
    assert history.history["val_certified_accuracy"] == [certified.accuracy[0.05]]
    assert history.history["val_certified_accuracy_eps_0.5"] == [certified.accuracy[0.5]]
    with pytest.raises(ValueError, match="l2"):
        keras_advreg.AdversarialRobustnessCallback(
            (x, y), epsilons=0.1, attack="fgsm", norm="infinity", certify=True
        )


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the CLI runs on TensorFlow")
def test_cli_evaluate_certify_column(tmp_path, capsys):
    import json

    from keras_advreg.apps import cli

    model = _linear(np.eye(3, dtype="float32"))
    model.save(tmp_path / "m.keras")
    x = np.array([[1.0, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 2.0]], "float32")
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2]))
    common = [
        "evaluate",
        str(tmp_path / "m.keras"),
        "--dataset",
        str(tmp_path / "d.npz"),
        "--quiet",
    ]
    out = tmp_path / "out"
    args = ["--epsilons", "0.1,0.5", "--norm", "l2", "--attack", "fgsm", "--certify", "--no-plots"]
    assert cli.main([*common, *args, "--output-dir", str(out)]) == 0
    # radii (1, 0.3, 2) / sqrt(2) = 0.71, 0.21, 1.41: two of three certified at 0.5
    assert "| 0.5       | " in capsys.readouterr().out
    results = json.loads((out / "robustness.json").read_text())
    assert results["certified"]["accuracy"] == {"0.1": 1.0, "0.5": pytest.approx(2 / 3)}
    assert cli.main([*common, "--epsilons", "0.1", "--certify"]) == cli.EXIT_USAGE  # norm infinity
    assert "use --norm l2" in capsys.readouterr().err
