"""`keras-advreg` as a process: no TensorFlow for parsing, a quiet start-up, the right backend.

These tests start Python (or the installed console script) in a subprocess: what a
process imports, and what TensorFlow writes to its stderr, cannot be seen in-process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT, make_model

import keras_advreg

#: A line of TensorFlow's C++ log (absl/glog format), e.g. `I0000 00:00:17... port.cc:153] ...`.
NATIVE_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^\]]+\] ", re.MULTILINE)


def child_env(**changes: str | None) -> dict[str, str]:
    """The environment of a child process: this one's, with `changes` (None removes)."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # conftest sets it; the command must not need it
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
    )  # this checkout, even when keras_advreg is installed elsewhere
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def python(code: str, *args: str, env: dict[str, str], timeout: int = 300):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout,
    )


def console_script() -> Path:
    """The installed `keras-advreg` script (a Python file on POSIX)."""
    script = Path(sys.executable).parent / "keras-advreg"
    if os.name == "nt" or not script.is_file():
        message = f"the keras-advreg console script is not installed at {script}"
        if os.environ.get("CI") and os.name != "nt":
            pytest.fail(message)
        pytest.skip(message)
    return script


def imported_modules(importtime_log: str) -> set[str]:
    """Module names in the output of `python -X importtime`."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in importtime_log.splitlines()
        if line.startswith("import time:")
    }


def heavy(modules: set[str]) -> list[str]:
    return sorted(
        m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "tensorflow_datasets")
    )


# --------------------------------------------------------------------------- no TensorFlow
def test_help_and_usage_errors_do_not_import_tensorflow():
    code = """
        import json, sys
        import keras_advreg
        import keras_advreg.apps.cli as cli

        statuses = {}
        for argv in (
            ["--help"],
            ["--version"],
            ["evaluate", "--help"],
            ["demo", "--help"],
            ["robust-mnist", "--help"],
            ["evaluate"],
            ["evaluate", "m.keras", "--epsilon", "abc"],
            ["evaluate", "m.keras", "--epsilons", "abc"],
            ["evaluate", "m.keras", "--norm", "l3"],
            ["demo", "--epochs", "0"],
        ):
            try:
                statuses[" ".join(argv)] = cli.main(argv)
            except SystemExit as e:
                statuses[" ".join(argv)] = e.code
        result = {
            "statuses": statuses,
            "version": keras_advreg.__version__,
            "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")),
        }
        # The public names still resolve, lazily, and keep their identity.
        from keras_advreg import AdversarialRegularization
        from keras_advreg.training import AdversarialRegularization as Defined
        result["lazy_names"] = (
            AdversarialRegularization is Defined
            and keras_advreg.attacks.PGD is not None
            and callable(keras_advreg.evaluate_robustness)
            and set(keras_advreg.__all__) <= set(dir(keras_advreg))
        )
        try:
            keras_advreg.no_such_name
        except AttributeError as e:
            result["unknown"] = str(e)
        print("RESULT " + json.dumps(result))
    """
    proc = python(code, env=child_env(KERAS_ADVREG_LAZY_IMPORT="1"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["heavy"] == []
    statuses = result["statuses"]
    assert [statuses[k] for k in ("--help", "--version", "evaluate --help")] == [0, 0, 0]
    assert [statuses[k] for k in ("demo --help", "robust-mnist --help")] == [0, 0]
    for argv in (
        "evaluate",
        "evaluate m.keras --epsilon abc",
        "evaluate m.keras --epsilons abc",
        "evaluate m.keras --norm l3",
        "demo --epochs 0",
    ):
        assert statuses[argv] == 2, argv
    assert "required: model" in proc.stderr and "'abc' is not a number" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert result["version"] == keras_advreg.__version__
    assert result["lazy_names"] is True
    assert "has no attribute 'no_such_name'" in result["unknown"]


def test_plain_import_stays_eager():
    # `import keras_advreg; keras.models.load_model(...)` needs the classes registered.
    code = """
        import sys
        import keras_advreg
        print("RESULT", "tensorflow" in sys.modules, "keras_advreg.training.model" in sys.modules)
    """
    proc = python(code, env=child_env(KERAS_ADVREG_LAZY_IMPORT=None))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("RESULT", 1)[1].split() == ["True", "True"]


@pytest.mark.parametrize(
    "argv, status, fragment",
    [
        (["--help"], 0, "usage: keras-advreg"),
        (["evaluate", "--help"], 0, "--epsilons"),
        (["evaluate"], 2, "required: model"),
        (["evaluate", "m.keras", "--epsilons", "abc"], 2, "'abc' is not a number"),
    ],
)
def test_console_script_parses_without_tensorflow(argv, status, fragment):
    script = console_script()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), *argv],
        capture_output=True,
        text=True,
        env=child_env(KERAS_ADVREG_LAZY_IMPORT=None),
        timeout=120,
    )
    assert proc.returncode == status, proc.stderr[-2000:]
    assert fragment in proc.stdout + proc.stderr
    modules = imported_modules(proc.stderr)
    assert "keras_advreg.apps.cli" in modules  # the script ran (and -X importtime worked)
    assert heavy(modules) == []
    assert not NATIVE_LOG_LINE.search(proc.stderr)
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- a real run
def test_console_script_evaluate_is_quiet_and_separates_results_from_progress(tmp_path):
    script = console_script()
    rng = np.random.default_rng(0)
    x = rng.random((8, 4)).astype("float32")
    y = rng.integers(0, 3, 8)
    model = keras_advreg.AdversarialRegularization(
        make_model("functional"),
        adv_config=keras_advreg.AdvConfig(adv_step_size=0.1, adv_grad_norm="infinity"),
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    model_path = tmp_path / "wrapper.keras"
    model.save(model_path)  # loading it needs the lazily imported classes registered
    npz = tmp_path / "data.npz"
    np.savez(npz, x=x, y=y)
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [str(script), "evaluate", str(model_path), "--dataset", str(npz), "--attack", "fgsm"]
        + ["--epsilons", "0.1,0.3", "--batch-size", "4", "--output-dir", str(out_dir)]
        + ["--no-plots"],
        capture_output=True,
        text=True,
        env=child_env(KERAS_ADVREG_LAZY_IMPORT=None),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, err = proc.stdout, proc.stderr
    # TensorFlow's C++ start-up log is hidden.
    assert not NATIVE_LOG_LINE.search(err), err
    assert "absl::InitializeLog" not in err and "oneDNN" not in err
    # Results on stdout, progress (plain: stderr is not a terminal) on stderr.
    assert "Attack: FGSM, norm infinity, epsilons 0.1, 0.3, no clipping" in out
    assert "Robustness report: FGSM (infinity), unclipped on 8 examples" in out
    assert "FGSM (infinity) on 8 examples\n" in err and "2/2 batches (100%)" in err
    assert "batches" not in out
    for stream in (out, err):
        assert "\x1b[" not in stream and "\r" not in stream
    results = json.loads((out_dir / "robustness.json").read_text())
    assert results["num_examples"] == 8 and results["config"]["clip_value_min"] is None


# --------------------------------------------------------------------------- the backend
def test_other_keras_backends_get_a_one_line_error(tmp_path):
    code = """
        import sys
        from keras_advreg.apps.cli import main
        sys.exit(main(sys.argv[1:]))
    """
    argv = ["evaluate", str(tmp_path / "model.keras"), "--dataset", str(tmp_path / "d.npz")]
    proc = python(
        code, *argv, env=child_env(KERAS_BACKEND="jax", KERAS_ADVREG_LAZY_IMPORT="1"), timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "keras-advreg: error: `keras-advreg evaluate` needs the TensorFlow backend of Keras 3; "
        "set KERAS_BACKEND=tensorflow. Received: KERAS_BACKEND=jax"
    ]
