"""`keras-advreg`: argument parsing, error paths, and `evaluate` on tiny saved models."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import keras
import numpy as np
import pytest
from conftest import MODEL_KINDS, REPO_ROOT, make_model

import keras_advreg
from keras_advreg.apps import arguments, cli, reporting, tutorial
from keras_advreg.apps.demo import CURVE_EPSILONS


def run(capsys, *argv):
    """Runs `keras-advreg ARGV...`; returns `(status, stdout, stderr)`."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_user_error(status, err, *fragments):
    assert status == 2
    assert err.splitlines()[-1].startswith("keras-advreg: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


# --------------------------------------------------------------------------- tiny fixtures
def linear_model(kind: str) -> keras.Model:
    """logits = [x, -x] for a 1-feature input: FGSM moves x by -eps*sign(x) for class 0."""
    model = make_model(kind, input_shape=(1,), num_classes=2, hidden=0)
    model.set_weights([np.array([[1.0, -1.0]], "float32"), np.zeros(2, "float32")])
    return model


# x = 0.3 (class 0), 0.05 (class 0), -0.4 (class 1): all correct when clean. FGSM l-inf
# pushes each towards the other class by eps: with eps 0.1 only 0.05 -> -0.05 flips (2/3
# correct); with eps 0.5 all three flip.
X_LINEAR = np.array([[0.3], [0.05], [-0.4]], "float32")
Y_LINEAR = np.array([0, 0, 1], "int64")


@pytest.fixture
def linear_npz(tmp_path):
    path = tmp_path / "linear.npz"
    np.savez(path, x=X_LINEAR, y=Y_LINEAR)
    return path


def save(model: keras.Model, tmp_path, name="model.keras"):
    path = tmp_path / name
    model.save(path)
    return path


# --------------------------------------------------------------------------- parsing
def test_parse_epsilons_reads_comma_separated_numbers():
    assert cli.parse_epsilons("0.05,0.1, 0.2,0.3") == (0.05, 0.1, 0.2, 0.3)
    assert cli.parse_epsilons("0") == (0.0,)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a,b", "'a' is not a number"),
        ("0.1,,0.2", "comma-separated numbers"),
        ("", "comma-separated numbers"),
        ("0.1,-0.2", ">= 0"),
        ("nan", ">= 0"),
        ("0.1,0.1", "must not repeat"),
        ("0.1,0.1000001", "must not repeat"),
    ],
)
def test_parse_epsilons_rejects_bad_lists(text, fragment):
    with pytest.raises(argparse.ArgumentTypeError, match="Received") as info:
        cli.parse_epsilons(text)
    assert fragment in str(info.value)


def test_demo_defaults_are_the_tutorials():
    args = cli.build_parser().parse_args(["demo"])
    assert (args.epochs, args.batch_size, args.seed) == (5, 32, 0)
    assert args.train_subset is None and args.test_subset is None
    assert args.output_dir == "outputs/demo"
    assert args.epsilons == CURVE_EPSILONS
    assert args.save_models and args.plots and not args.quiet


def test_demo_options_are_parsed():
    args = cli.build_parser().parse_args(
        "demo --epochs 1 --batch-size 64 --train-subset 100 --test-subset 50 --data-dir D "
        "--manual-dir M --output-dir O --epsilons 0,0.1 --seed 3 --no-save-models --no-plots "
        "--quiet".split()
    )
    assert (args.epochs, args.batch_size, args.train_subset, args.test_subset) == (1, 64, 100, 50)
    assert (args.data_dir, args.manual_dir, args.output_dir) == ("D", "M", "O")
    assert args.epsilons == (0.0, 0.1) and args.seed == 3
    assert not args.save_models and not args.plots and args.quiet


def test_evaluate_defaults():
    args = cli.build_parser().parse_args(["evaluate", "m.keras"])
    assert args.model == "m.keras" and args.dataset == "mnist"
    assert args.epsilons == (0.05, 0.1, 0.2, 0.3)
    assert (args.attack, args.norm, args.batch_size) == ("autoattack", "infinity", 256)
    assert args.clip_min is None and args.clip_max is None


@pytest.mark.parametrize(
    "argv, fragments",
    [
        ([], ["required: COMMAND"]),
        (["train"], ["invalid choice: 'train'"]),
        (["demo", "--epochs", "0"], ["argument --epochs", "integer >= 1", "'0'"]),
        (["demo", "--train-subset", "many"], ["argument --train-subset", "'many'"]),
        (["evaluate", "m.keras", "--epsilons", "0.1,big"], ["argument --epsilons", "'big'"]),
        (["evaluate", "m.keras", "--attack", "cw"], ["argument --attack", "'cw'"]),
        (["evaluate", "m.keras", "--norm", "l3"], ["argument --norm", "'l3'"]),
        (["evaluate", "m.keras", "--clip-min", "low"], ["argument --clip-min", "'low'"]),
        (["evaluate"], ["required: model"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, argv, fragments):
    status, out, err = run(capsys, *argv)
    assert_user_error(status, err, *fragments)
    assert err.startswith("usage: keras-advreg")


def test_parser_defaults_match_the_library_constants():
    # The parser keeps its own copies (importing keras_advreg.apps.demo imports TensorFlow).
    assert arguments.DEMO_EPSILONS == CURVE_EPSILONS
    assert arguments.EVAL_BATCH_SIZE == tutorial.EVAL_BATCH_SIZE


def test_extras_named_in_messages_exist():
    tomllib = pytest.importorskip("tomllib")
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert {"plot", "datasets"} <= set(extras)
    assert any(r.startswith("matplotlib") for r in extras["plot"])
    assert any(r.startswith("tensorflow-datasets") for r in extras["datasets"])


def test_norm_aliases_are_accepted():
    args = cli.build_parser().parse_args(["evaluate", "m.keras", "--norm", "L-INF"])
    assert args.norm == "infinity"


def test_version_and_help(capsys):
    status, out, _ = run(capsys, "--version")
    assert status == 0 and out.strip() == f"keras-advreg {keras_advreg.__version__}"
    status, out, _ = run(capsys, "evaluate", "--help")
    assert status == 0 and "--epsilons" in out and "safe mode" in out


# --------------------------------------------------------------------------- evaluate: errors
def test_missing_model_file(capsys, tmp_path, linear_npz):
    path = tmp_path / "nowhere" / "model.keras"
    status, _, err = run(capsys, "evaluate", path, "--dataset", linear_npz)
    assert_user_error(status, err, "model file not found", str(path))


def test_text_file_named_keras(capsys, tmp_path, linear_npz):
    path = tmp_path / "x.keras"
    path.write_bytes(b"this is not a zip archive")
    status, _, err = run(capsys, "evaluate", path, "--dataset", linear_npz)
    assert_user_error(
        status,
        err,
        f"`model` is not a Keras model file (.keras is a zip archive): {path}. "
        "Received: a 25-byte file that is not a zip archive",
    )
    assert "File not found" not in err


def test_truncated_model_file(capsys, tmp_path, linear_npz):
    good = save(linear_model("functional"), tmp_path)
    path = tmp_path / "truncated.keras"
    path.write_bytes(good.read_bytes()[:200])
    status, _, err = run(capsys, "evaluate", path, "--dataset", linear_npz)
    assert_user_error(status, err, "`model` is a damaged Keras model file", str(path), "200-byte")


def test_folder_instead_of_model_file(capsys, tmp_path, linear_npz):
    status, _, err = run(capsys, "evaluate", tmp_path, "--dataset", linear_npz)
    assert_user_error(status, err, "is a folder")


def test_safe_mode_refuses_code_in_the_model_file(capsys, tmp_path, linear_npz):
    inputs = keras.Input((1,))
    outputs = keras.layers.Dense(2)(keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    path = save(keras.Model(inputs, outputs), tmp_path)
    status, _, err = run(capsys, "evaluate", path, "--dataset", linear_npz, "--no-plots")
    assert_user_error(status, err, "could not load", "safe_mode")


def test_unknown_dataset(capsys, tmp_path):
    path = save(linear_model("functional"), tmp_path)
    status, _, err = run(capsys, "evaluate", path, "--dataset", "cifar10")
    assert_user_error(status, err, "`--dataset` must be 'mnist' or", "cifar10")


def test_missing_npz(capsys, tmp_path):
    path = save(linear_model("functional"), tmp_path)
    npz = tmp_path / "absent.npz"
    status, _, err = run(capsys, "evaluate", path, "--dataset", npz)
    assert_user_error(status, err, "dataset file not found", str(npz))


def test_npz_without_y(capsys, tmp_path):
    path = save(linear_model("functional"), tmp_path)
    npz = tmp_path / "features.npz"
    np.savez(npz, x=X_LINEAR, labels=Y_LINEAR)
    status, _, err = run(capsys, "evaluate", path, "--dataset", npz)
    assert_user_error(status, err, "must hold arrays 'x' and 'y'", "missing ['y']")


def test_npz_with_mismatched_lengths(capsys, tmp_path):
    path = save(linear_model("functional"), tmp_path)
    npz = tmp_path / "bad.npz"
    np.savez(npz, x=X_LINEAR, y=Y_LINEAR[:2])
    status, _, err = run(capsys, "evaluate", path, "--dataset", npz)
    assert_user_error(status, err, "x has 3, y has 2")


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_input_shape_mismatch(capsys, tmp_path, kind):
    path = save(linear_model(kind), tmp_path)
    npz = tmp_path / "wide.npz"
    np.savez(npz, x=np.zeros((4, 5), "float32"), y=np.zeros(4, "int64"))
    status, _, err = run(capsys, "evaluate", path, "--dataset", npz)
    assert_user_error(status, err, "does not match the data", "(5,)", "(4, 5)")
    if kind != "subclassed":  # a subclassed model's input shape is only known by calling it
        assert "(None, 1)" in err


def test_labels_out_of_range_are_a_user_error(capsys, tmp_path):
    path = save(linear_model("functional"), tmp_path)
    npz = tmp_path / "labels.npz"
    np.savez(npz, x=X_LINEAR, y=np.array([0, 1, 7]))
    status, _, err = run(capsys, "evaluate", path, "--dataset", npz, "--no-plots")
    assert_user_error(status, err, "Labels must be class ids")


def test_non_finite_features_are_a_user_error(capsys, tmp_path):
    path = save(linear_model("functional"), tmp_path)
    npz = tmp_path / "nan.npz"
    np.savez(npz, x=np.array([[0.3], [np.nan], [-0.4]], "float32"), y=Y_LINEAR)
    status, _, err = run(capsys, "evaluate", path, "--dataset", npz, "--no-plots")
    assert_user_error(status, err, "non-finite value (nan)", "example 1")


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--attack", "pgd", "--norm", "l1"], "attack='pgd' cannot be used with norm='l1'"),
        (["--clip-min", "1", "--clip-max", "0"], "`clip_value_min` must be <= `clip_value_max`"),
        (["--dataset", "mnist", "--clip-min", "2"], "clip_value_max=1.0"),  # mnist's default
    ],
)
def test_attack_settings_are_checked_before_loading(
    capsys, tmp_path, linear_npz, monkeypatch, options, fragment
):
    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded before the attack settings were checked")

    monkeypatch.setattr(cli, "load_model", must_not_load)
    monkeypatch.setattr(cli, "load_dataset", must_not_load)
    path = save(linear_model("functional"), tmp_path)
    argv = ["evaluate", path, "--dataset", linear_npz, *options, "--no-plots"]
    status, _, err = run(capsys, *argv)
    assert_user_error(status, err, fragment)
    assert len(err.strip().splitlines()) == 1


def must_not_load(*args, **kwargs):
    raise AssertionError("loaded the model although the command must fail first")


def test_mnist_without_tensorflow_datasets_names_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    monkeypatch.setattr(cli, "load_model", must_not_load)
    path = save(linear_model("functional"), tmp_path)
    status, _, err = run(capsys, "evaluate", path, "--dataset", "mnist", "--no-plots")
    assert_user_error(
        status,
        err,
        "`--dataset mnist` needs tensorflow-datasets",
        'pip install "keras-advreg[datasets]"',
    )
    assert len(err.strip().splitlines()) == 1


def test_mnist_loading_errors_name_the_extra(capsys, tmp_path, monkeypatch):
    # tensorflow-datasets found, but failing to import when MNIST is loaded.
    from keras_advreg.data import tfds

    def broken():
        raise ImportError(
            '`load_tfds` requires tensorflow-datasets. Install it with `pip install "keras-advreg[datasets]"`.'
        )

    monkeypatch.setattr(tfds, "_import_tfds", broken)
    args = cli.build_parser().parse_args(["evaluate", "m.keras", "--dataset", "mnist"])
    with pytest.raises(cli.UserError, match=r"`--dataset mnist` needs tensorflow-datasets"):
        cli.load_dataset(args)


def test_verbose_keeps_tensorflows_log_level(capsys, tmp_path, linear_npz, monkeypatch):
    missing = tmp_path / "absent.keras"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    status, _, err = run(capsys, "evaluate", missing, "--dataset", linear_npz, "--verbose")
    assert_user_error(status, err, "model file not found")
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    status, _, err = run(capsys, "evaluate", missing, "--dataset", linear_npz)
    assert_user_error(status, err, "model file not found")
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's own setting wins
    run(capsys, "evaluate", missing, "--dataset", linear_npz)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_keras_backend_is_read_as_keras_reads_it(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "keras")  # as before Keras is imported
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert cli.keras_backend() == ("tensorflow", "Keras' default")
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    backend, source = cli.keras_backend()
    assert backend == "torch" and str(tmp_path / "keras.json") in source
    with pytest.raises(cli.UserError, match=r"needs the TensorFlow backend of Keras 3") as info:
        cli.check_keras_backend("demo")
    assert "`keras-advreg demo`" in str(info.value) and "keras.json" in str(info.value)
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # the variable overrides the file
    assert cli.keras_backend() == ("jax", "KERAS_BACKEND=jax")


def test_demo_with_missing_manual_dir_fails_before_training(capsys, tmp_path):
    missing = tmp_path / "no-mnist-here"
    status, _, err = run(
        capsys, "demo", "--manual-dir", missing, "--output-dir", tmp_path / "out", "--no-plots"
    )
    assert_user_error(status, err, "`manual_dir`", str(missing))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- evaluate: runs
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_evaluate_gives_hand_computed_fgsm_accuracy(capsys, tmp_path, linear_npz, kind):
    path = save(linear_model(kind), tmp_path)
    out_dir = tmp_path / "out"
    status, out, err = run(
        capsys,
        "evaluate",
        path,
        "--dataset",
        linear_npz,
        "--epsilons",
        "0.1,0.5",
        "--attack",
        "fgsm",
        "--output-dir",
        out_dir,
        "--quiet",
        "--no-plots",
    )
    assert status == 0, err
    results = json.loads((out_dir / cli.EVALUATE_RESULTS_FILE).read_text())
    assert results["clean_accuracy"] == 1.0
    assert results["accuracy"] == {"0.1": pytest.approx(2 / 3), "0.5": 0.0}
    assert results["num_examples"] == 3 and results["dataset"] == str(linear_npz)
    assert "0 (clean)    1.0000" in out
    assert "0.1    0.6667" in out and "0.5    0.0000" in out


def test_evaluate_clips_only_when_asked_for_npz(capsys, tmp_path, linear_npz):
    # With clipping to [0, 1] and eps 0.5: 0.3 -> 0.0 and 0.05 -> 0.0 (logits [0, 0], argmax
    # 0: still correct) while -0.4 -> 0.1 (class 0: wrong). Without clipping all three flip.
    path = save(linear_model("functional"), tmp_path)
    argv = ["evaluate", path, "--dataset", linear_npz, "--epsilons", "0.5", "--quiet", "--no-plots"]
    argv += ["--attack", "fgsm"]
    status, _, err = run(
        capsys, *argv, "--clip-min", "0", "--clip-max", "1", "--output-dir", tmp_path / "c"
    )
    assert status == 0, err
    clipped = json.loads((tmp_path / "c" / cli.EVALUATE_RESULTS_FILE).read_text())
    assert clipped["accuracy"] == {"0.5": pytest.approx(2 / 3)}
    assert clipped["config"]["clip_value_min"] == 0.0
    status, _, err = run(capsys, *argv, "--output-dir", tmp_path / "u")
    assert status == 0, err
    unclipped = json.loads((tmp_path / "u" / cli.EVALUATE_RESULTS_FILE).read_text())
    assert unclipped["accuracy"] == {"0.5": 0.0}
    assert unclipped["config"]["clip_value_min"] is None


def test_evaluate_pgd_gives_hand_computed_accuracy(capsys, tmp_path, linear_npz):
    # The gradient sign of the linear model is constant, so PGD (3 steps of 2.5 * eps / 3,
    # from any random start) ends on the far edge of the ball, as FGSM does.
    path = save(linear_model("sequential"), tmp_path)
    status, _, err = run(
        capsys,
        "evaluate",
        path,
        "--dataset",
        linear_npz,
        "--attack",
        "pgd",
        "--pgd-steps",
        "3",
        "--epsilons",
        "0.1,0.5",
        "--output-dir",
        tmp_path / "out",
        "--quiet",
        "--no-plots",
    )
    assert status == 0, err
    results = json.loads((tmp_path / "out" / cli.EVALUATE_RESULTS_FILE).read_text())
    assert results["accuracy"] == {"0.1": pytest.approx(2 / 3), "0.5": 0.0}
    assert results["attack"] == "pgd" and results["config"]["pgd_steps"] == 3


def test_evaluate_matches_evaluate_robustness_for_a_saved_wrapper(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 4)).astype("float32")
    y = rng.integers(0, 3, 40)
    model = keras_advreg.AdversarialRegularization(
        make_model("functional"),
        adv_config=keras_advreg.AdvConfig(adv_step_size=0.1, adv_grad_norm="infinity"),
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    path = save(model, tmp_path, "wrapper.keras")
    npz = tmp_path / "data.npz"
    np.savez(npz, x=x, y=y)
    status, out, err = run(
        capsys,
        "evaluate",
        path,
        "--dataset",
        npz,
        "--epsilons",
        "0.1,0.3",
        "--attack",
        "fgsm",
        "--batch-size",
        "16",
        "--output-dir",
        tmp_path / "out",
        "--no-plots",
    )
    assert status == 0, err
    assert "FGSM (infinity) on 40 examples\n" in err  # the progress bar's title
    assert "3/3 batches (100%)" in err and "batches" not in out
    results = json.loads((tmp_path / "out" / cli.EVALUATE_RESULTS_FILE).read_text())
    expected = keras_advreg.evaluate_robustness(
        model, (x, y), epsilons=(0.1, 0.3), batch_size=16, attack="fgsm"
    )
    assert results["clean_accuracy"] == expected.clean_accuracy
    assert results["accuracy"] == {f"{e:g}": a for e, a in expected.accuracy.items()}
    assert results["config"]["attacked"].startswith("Functional")


def test_evaluate_writes_the_curve(capsys, tmp_path, linear_npz):
    if os.environ.get("CI"):  # a declared extra that CI installs: missing is a failure there
        import matplotlib  # noqa: F401
    else:
        pytest.importorskip("matplotlib")
    path = save(linear_model("sequential"), tmp_path)
    status, out, err = run(
        capsys, "evaluate", path, "--dataset", linear_npz, "--output-dir", tmp_path / "o"
    )
    assert status == 0, err
    curve = tmp_path / "o" / cli.EVALUATE_CURVE_FILE
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Wrote {tmp_path / 'o' / cli.EVALUATE_RESULTS_FILE}" in out


# --------------------------------------------------------------------------- evaluate: output
def test_evaluate_prints_settings_and_table_on_stdout_and_progress_on_stderr(
    capsys, tmp_path, linear_npz
):
    path = save(linear_model("functional"), tmp_path)
    argv = ["evaluate", path, "--dataset", linear_npz, "--epsilons", "0.1,0.5", "--no-plots"]
    status, out, err = run(
        capsys,
        *argv,
        "--attack",
        "fgsm",
        "--clip-min",
        "-1",
        "--clip-max",
        "1",
        "--output-dir",
        tmp_path / "c",
    )
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "Attack: FGSM, norm infinity, epsilons 0.1, 0.5, clipped to [-1, 1]"
    assert lines[1].startswith("Robustness report: FGSM (infinity), clipped to [-1.0, 1.0]")
    assert "0 (clean)    1.0000" in out
    # The bar starts with the run (elapsed time from the start), then advances.
    assert err.startswith(
        "FGSM (infinity) on 3 examples\n  0/1 batches (0%), 0s\n  1/1 batches (100%), "
    )
    for stream in (out, err):  # captured: not a terminal, so no escapes, no redraws
        assert "\x1b[" not in stream and "\r" not in stream
    results = json.loads((tmp_path / "c" / cli.EVALUATE_RESULTS_FILE).read_text())
    config = results["config"]
    assert (config["clip_value_min"], config["clip_value_max"]) == (-1.0, 1.0)
    assert config["epsilons"] == [0.1, 0.5] and config["description"] == "FGSM"
    assert results["norm"] == "infinity"

    status, out, err = run(
        capsys, *argv, "--attack", "pgd", "--pgd-steps", "3", "--quiet", "--output-dir", ""
    )
    assert status == 0, err
    assert out.splitlines()[0] == (
        "Attack: PGD-3, norm infinity, epsilons 0.1, 0.5, 3 steps of size 2.5 * epsilon / 3, "
        "random start, no clipping"
    )
    assert "unclipped" in out.splitlines()[1]
    assert "batches" not in err  # --quiet: no progress


def test_evaluate_without_matplotlib_skips_the_curve(capsys, tmp_path, linear_npz, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as after a core install
    path = save(linear_model("sequential"), tmp_path)
    argv = ["evaluate", path, "--dataset", linear_npz, "--attack", "fgsm", "--quiet"]
    status, out, err = run(capsys, *argv, "--output-dir", tmp_path / "o")
    assert status == 0, err
    assert err.splitlines() == [
        "keras-advreg: note: matplotlib is not installed, so the accuracy-vs-epsilon curve is "
        'skipped (pip install "keras-advreg[plot]" to draw it)'
    ]
    assert (tmp_path / "o" / cli.EVALUATE_RESULTS_FILE).is_file()
    assert not (tmp_path / "o" / cli.EVALUATE_CURVE_FILE).exists()
    assert out.splitlines()[-1] == f"Wrote {tmp_path / 'o' / cli.EVALUATE_RESULTS_FILE}"
    # Asked for explicitly, the curve is an error, before any work.
    monkeypatch.setattr(cli, "load_model", must_not_load)
    status, _, err = run(capsys, *argv, "--output-dir", tmp_path / "p", "--plots")
    assert_user_error(status, err, "`--plots` needs matplotlib", 'pip install "keras-advreg[plot]"')


# --------------------------------------------------------------------------- progress bar
class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_is_plain_off_a_terminal():
    stream = io.StringIO()
    ticks = iter(range(100))
    bar = reporting.ProgressBar(20, title="PGD-10", stream=stream, clock=lambda: next(ticks))
    for i in range(1, 21):
        bar.update(i)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "PGD-10"
    assert lines[1] == "  1/20 batches (5%), 0s, eta 0s"
    assert lines[-1] == "  20/20 batches (100%), 19s"
    assert len(lines) == 1 + 11  # the first step, then every tenth
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_progress_bar_redraws_one_line_on_a_terminal():
    stream = FakeTerminal()
    ticks = iter(range(100))
    bar = reporting.ProgressBar(4, stream=stream, width=8, clock=lambda: next(ticks))
    for i in range(1, 5):
        bar.update(i)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\r[====>   ] 2/4 batches 1s, eta 1s" in text
    assert text.rstrip("\n").endswith("\r[========] 4/4 batches 3s")
    assert "\x1b" not in text


def test_progress_bar_defaults_to_stderr(capsys):
    reporting.ProgressBar(1, title="t").update(1)
    out, err = capsys.readouterr()
    assert out == "" and err == "t\n  1/1 batches (100%), 0s\n"


def test_attack_choices_are_the_registered_names():
    """`--attack` takes exactly `attacks.names()`, read from the sources without importing them."""
    from keras_advreg import attacks
    from keras_advreg.apps.arguments import ATTACKS, attack_names

    assert list(ATTACKS) == attacks.names() == list(attack_names())
    from keras_advreg.apps.cli import build_parser

    parsed = build_parser().parse_args(["evaluate", "m.keras", "--attack", "apgd"])
    assert parsed.attack == "apgd"  # a name the hand-kept list once lacked
