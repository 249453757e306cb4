"""The tutorial end to end on real MNIST, at reduced size, through `keras-advreg`.

`keras-advreg demo` on 5000 training and 1000 test examples for 1 epoch, then
`keras-advreg evaluate` on the models it saved. Runs in CI (the MNIST fixture
fails there when the data is missing, it never skips).
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from keras_advreg.apps import cli, demo

TRAIN, TEST = 5000, 1000


@pytest.fixture(scope="module")
def demo_run(mnist_manual_dir, tfds_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    argv = [
        "demo",
        "--epochs=1",
        f"--train-subset={TRAIN}",
        f"--test-subset={TEST}",
        f"--manual-dir={mnist_manual_dir}",
        f"--data-dir={tfds_data_dir}",
        f"--output-dir={out}",
        "--strong-subset=200",
    ]
    stdout, stderr = io.StringIO(), io.StringIO()  # neither is a terminal
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main(argv)
    assert status == 0
    return (
        out,
        json.loads((out / demo.RESULTS_FILE).read_text()),
        stdout.getvalue(),
        stderr.getvalue(),
    )


@pytest.mark.slow
def test_demo_progress_goes_to_stderr_plain_and_the_table_to_stdout(demo_run):
    _, _, stdout, stderr = demo_run
    # Keras' fit (one plain line per epoch) and the attacks' progress bars.
    assert "Training the adv-regularized model" in stderr and "ms/step" in stderr
    assert "on the adv-regularized model" in stderr and "Training" not in stdout
    # No terminal: no ANSI codes from us (tfds' own tqdm bars, while it first prepares MNIST
    # in this session's fresh data_dir, come before the training starts).
    ours = stderr[stderr.index("Training the base model") :]
    assert "\x1b[" not in ours and "\x1b[" not in stdout
    assert "| adv-regularized" in stdout and "| adv-regularized" not in stderr
    assert "Wrote " in stdout


def inline_fgsm_accuracy(model, x, y, eps):
    """Independent white-box FGSM (l-inf, clipped to [0, 1]) accuracy of a logits model."""
    import keras
    import numpy as np
    import tensorflow as tf

    correct = 0
    for start in range(0, len(y), 250):
        xb = tf.convert_to_tensor(x[start : start + 250])
        yb = y[start : start + 250]
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = keras.losses.sparse_categorical_crossentropy(yb, model(xb), from_logits=True)
        x_adv = tf.clip_by_value(xb + eps * tf.sign(tape.gradient(loss, xb)), 0.0, 1.0)
        correct += int(np.sum(np.argmax(model(x_adv), -1) == yb))
    return correct / len(y)


@pytest.mark.slow
def test_demo_adversarial_regularization_is_more_robust(demo_run, tfds_data_dir, mnist_manual_dir):
    import keras

    from keras_advreg.apps.mnist import load_mnist_test

    out, results, _, _ = demo_run
    base, adv = results["models"]["base"], results["models"]["adv-regularized"]
    assert results["data"] == {"train_examples": TRAIN, "test_examples": TEST}
    # One epoch on 5000 examples: both learn (the full run reaches about 0.99).
    assert base["clean_accuracy"] >= 0.85 and adv["clean_accuracy"] >= 0.85
    # The tutorial's measurement (FGSM 0.2 made on the base model) and the white-box one.
    assert adv["perturbed_accuracy"] >= base["perturbed_accuracy"] + 0.15
    assert adv["whitebox_accuracy"] >= base["whitebox_accuracy"] + 0.10
    for model in (base, adv):  # the strong attacks never leave more than the weak ones
        assert model["autoattack_accuracy"]["0.2"] <= model["pgd40_accuracy"]["0.2"]
        strong = [model["autoattack_accuracy"][e] for e in ("0.1", "0.2", "0.3")]
        assert strong == sorted(strong, reverse=True)
    # Attacking the base model itself is the white-box attack on it.
    assert base["perturbed_accuracy"] == base["whitebox_accuracy"]
    for name in ("base", "adv-regularized"):
        curve = results["curve"][name]
        assert curve["0"] == results["models"][name]["clean_accuracy"]
        # White-box FGSM 0.2, recomputed here on the saved model and the same test examples.
        model = keras.models.load_model(out / demo.MODEL_FILES[name])
        x_test, y_test = load_mnist_test(
            take=TEST, data_dir=str(tfds_data_dir), manual_dir=str(mnist_manual_dir)
        )
        expected = inline_fgsm_accuracy(model, x_test, y_test, 0.2)
        assert curve["0.2"] == pytest.approx(expected, abs=2 / TEST)
        assert curve["0.3"] <= curve["0.05"]
    assert results["versions"]["keras"].startswith("3.")
    assert set(results["timings_seconds"]) >= {"train_base", "train_adv-regularized"}
    for name in (demo.GRID_FILE, demo.CURVE_FILE):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["base", "adv-regularized"])
def test_evaluate_on_the_saved_model_repeats_the_demos_whitebox_accuracy(
    demo_run, mnist_manual_dir, tfds_data_dir, tmp_path, capsys, name
):
    out, results, _, _ = demo_run
    status = cli.main(
        [
            "evaluate",
            str(out / demo.MODEL_FILES[name]),
            "--dataset=mnist",
            "--attack=fgsm",
            f"--max-examples={TEST}",
            f"--manual-dir={mnist_manual_dir}",
            f"--data-dir={tfds_data_dir}",
            f"--output-dir={tmp_path}",
            "--quiet",
            "--no-plots",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    evaluated = json.loads((tmp_path / cli.EVALUATE_RESULTS_FILE).read_text())
    whitebox = results["models"][name]["whitebox_accuracy"]
    assert evaluated["accuracy"]["0.2"] == whitebox
    assert evaluated["clean_accuracy"] == results["models"][name]["clean_accuracy"]
    assert f"0.2    {whitebox:.4f}" in printed


@pytest.mark.slow
def test_robust_mnist_runs_on_a_subset(mnist_manual_dir, tfds_data_dir, tmp_path, capsys):
    """`keras-advreg robust-mnist` end to end on 200 training and 20 test examples, 1 epoch."""
    import keras
    import numpy as np

    from keras_advreg.apps.mnist import load_mnist_test

    argv = [
        "robust-mnist",
        "--epsilon=0.2",
        "--epochs=1",
        "--train-subset=200",
        "--test-subset=20",
        f"--manual-dir={mnist_manual_dir}",
        f"--data-dir={tfds_data_dir}",
        f"--output-dir={tmp_path}",
        "--quiet",
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_examples"] == 20 and results["recipe"]["epochs"] == 1
    # The saved classifier loads without keras_advreg's objects; its clean accuracy on the
    # same 20 examples, computed here, is the one reported.
    model = keras.models.load_model(tmp_path / "model.keras")
    x, y = load_mnist_test(take=20, data_dir=str(tfds_data_dir), manual_dir=str(mnist_manual_dir))
    clean = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    assert results["clean_accuracy"] == pytest.approx(clean)
    assert results["fgsm"]["accuracy"] == pytest.approx(
        inline_fgsm_accuracy(model, x, y, 0.2), abs=1 / 20
    )
    for key in ("fgsm", "pgd40", "autoattack", "autoattack_with_square"):
        assert 0.0 <= results[key]["accuracy"] <= clean, key
    assert results["autoattack"]["accuracy"] <= results["pgd40"]["accuracy"]
    assert f"{results['clean_accuracy']:.4f}" in printed and "robust-mnist eps 0.2" in printed
