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


@pytest.mark.slow
def test_demo_adversarial_regularization_is_more_robust(demo_run):
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
        assert curve["0.2"] == results["models"][name]["whitebox_accuracy"]
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
