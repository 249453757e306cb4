"""Surviving faults: training and tuning processes killed with SIGKILL, then started again.

A script (tests/resume_train.py, tests/resume_tune.py) runs in a subprocess, writes a
marker file at a chosen point and waits there; the test kills it with SIGKILL and runs
the same command again, which must finish as an uninterrupted run does. Every process
is killed and reaped on the way out, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_advreg import AdvConfig, AdversarialRegularization, AdversarialRobustnessCallback
from keras_advreg.attacks import PGD

# Keras' own h5 weight writer (BackupAndRestore) trips NumPy 2's `copy` deprecation.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

TESTS = Path(__file__).resolve().parent
TRAIN_SCRIPT = TESTS / "resume_train.py"
TUNE_SCRIPT = TESTS / "resume_tune.py"
# TensorFlow alone takes ~20 s to import on a loaded 2-core machine; a run is a few more.
START_TIMEOUT = 180
RUN_TIMEOUT = 240


# --------------------------------------------------------------------------- processes
@contextlib.contextmanager
def processes():
    """Starts subprocesses; kills and reaps every one still running on the way out."""
    started: list[subprocess.Popen] = []
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
    }

    def start(command: list, log: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [str(c) for c in command], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        proc.log = log
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
        for proc in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)


def tail(proc: subprocess.Popen, chars: int = 4000) -> str:
    try:
        return proc.log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = START_TIMEOUT) -> dict:
    """Waits until `proc` writes `path` (JSON); fails if it exits first or times out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before writing {path.name}:\n{tail(proc)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {path.name} after {timeout} s:\n{tail(proc)}")
        time.sleep(0.2)
    return json.loads(path.read_text())


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s:\n{tail(proc)}")
    assert proc.returncode == 0, f"exited with {proc.returncode}:\n{tail(proc)}"


# --------------------------------------------------------------------------- training
def load_run(workdir: Path) -> tuple[dict, list]:
    result = json.loads((workdir / "result.json").read_text())
    with np.load(workdir / "weights.npz") as weights:
        return result, [weights[f"arr_{i}"] for i in range(len(weights.files))]


SCENARIOS = {
    # Robustness measured every epoch; killed in epoch 2 (0-based), after the backup of epoch 1.
    "every_epoch": ([], 2),
    # Every 2nd epoch, stopping on a collapse (the last layer negated in epoch 5): killed
    # in epoch 4, which is not due and logs epoch 3's values; epoch 3 holds the best
    # robust accuracy, whose weights are put back at the collapse.
    "every_2_epochs_stop_on_collapse": (
        ["--every-n-epochs", "2", "--stop-on-collapse", "0.3", "--sabotage-epoch", "5"],
        4,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sigkilled_training_resumes_as_if_uninterrupted(scenario, tmp_path):
    args, killed_epoch = SCENARIOS[scenario]
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    command = [sys.executable, TRAIN_SCRIPT, run_dir, *args, "--pause-epoch", killed_epoch]
    with processes() as start:
        reference = start(
            [sys.executable, TRAIN_SCRIPT, reference_dir, *args], tmp_path / "ref.log"
        )
        first = start(command, tmp_path / "first.log")
        paused = wait_for_file(run_dir / "paused", first)
        assert paused == {"epoch": killed_epoch, "batch": 2, "pid": first.pid}
        # BackupAndRestore's last backup: the end of the epoch before.
        backup = json.loads((run_dir / "backup" / "training_metadata.json").read_text())
        assert backup["epoch"] == killed_epoch
        sigkill(first)
        assert not (run_dir / "result.json").exists()

        second = start(command, tmp_path / "second.log")  # the same command again
        finish(second)
        finish(reference)

    expected, expected_weights = load_run(reference_dir)
    result, weights = load_run(run_dir)
    # The restart ran the epochs from the backup on, not from 0 ...
    assert result["epochs"] == expected["epochs"][killed_epoch:]
    assert result["epochs"][0] == killed_epoch
    # ... and logged what the uninterrupted run logged for them, robustness included.
    assert set(result["history"]) == set(expected["history"])
    assert {"val_adv_accuracy", "val_adv_accuracy_eps_0.05", "val_clean_accuracy"} <= set(
        result["history"]
    )
    for key, values in expected["history"].items():
        np.testing.assert_allclose(
            result["history"][key], values[killed_epoch:], rtol=1e-6, atol=1e-6, err_msg=key
        )
    assert len(weights) == len(expected_weights)
    for got, want in zip(weights, expected_weights):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert result["iterations"] == expected["iterations"]
    # The robustness callback's stopping state matches too.
    for key in ("best_robust_accuracy", "best_epoch", "collapsed_epoch"):
        assert result[key] == expected[key], key
    if scenario == "every_2_epochs_stop_on_collapse":
        assert expected["collapsed_epoch"] == 5 and expected["best_epoch"] == 3
        # The restart measured the restored weights (epoch 3's) before training epoch 4.
        later = [e for e in expected["evaluated_epochs"] if e >= killed_epoch]
        assert result["evaluated_epochs"] == [killed_epoch - 1, *later]
    else:
        assert result["evaluated_epochs"] == result["epochs"]
    # A completed fit deletes its backup.
    assert not (run_dir / "backup").exists()


# --------------------------------------------------------------------------- in one process
class Interrupt(keras.callbacks.Callback):
    """Raises at the beginning of one epoch, as Keras' BackupAndRestore example does."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def interrupted_then_resumed(tmp_path, interrupt_epoch, epochs, resumed_callbacks=None, **kwargs):
    """Fits until `interrupt_epoch` raises, then again with the same callbacks.

    Returns the callback, the first fit's reports, the weights at the interruption (those
    of the backup), the second fit's history and the model. `resumed_callbacks(model)`
    gives more callbacks for the second fit.
    """
    from resume_train import data

    x, y = data(64, seed=1)
    x_val, y_val = data(48, seed=2)
    base = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
    )
    model = AdversarialRegularization(
        base, adv_config=AdvConfig(multiplier=0.2, adv_step_size=0.05)
    )
    model.compile(
        keras.optimizers.Adam(0.03),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = AdversarialRobustnessCallback(
        (x_val, y_val),
        attack=PGD(steps=3, random_start=False, clip_value_min=0.0, clip_value_max=1.0),
        epsilons=0.05,
        **kwargs,
    )
    backup = keras.callbacks.BackupAndRestore(tmp_path / "backup")
    fit = dict(x=x, y=y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PGD is an upper bound, said once
        with pytest.raises(RuntimeError, match="interrupted"):
            model.fit(**fit, callbacks=[callback, backup, Interrupt(interrupt_epoch)])
        before = dict(callback.reports)
        at_backup = model.get_weights()
        more = resumed_callbacks(model) if resumed_callbacks else []
        history = model.fit(**fit, callbacks=[callback, backup, *more])
    return callback, before, at_backup, history, model


def test_a_restored_fit_logs_the_restored_weights_until_its_next_due_epoch(tmp_path):
    callback, before, _, history, _ = interrupted_then_resumed(
        tmp_path, interrupt_epoch=2, epochs=4, every_n_epochs=2
    )
    assert history.epoch == [2, 3]
    # Epoch 2 is not due: an uninterrupted run logs epoch 1's values there. The restart
    # measured the restored weights (the backup of epoch 1) before training epoch 2.
    assert sorted(callback.reports) == [1, 3]
    assert callback.reports[1].robust_accuracy == before[1].robust_accuracy
    assert callback.reports[1].clean_accuracy == before[1].clean_accuracy
    logged = history.history
    assert logged["val_adv_accuracy"][0] == before[1].robust_accuracy
    assert logged["val_clean_accuracy"][0] == before[1].clean_accuracy
    assert logged["val_adv_accuracy"][1] == callback.reports[3].robust_accuracy


def test_a_restored_fit_detects_a_collapse_from_the_restored_accuracy(tmp_path):
    from resume_train import Sabotage

    callback, before, at_backup, history, model = interrupted_then_resumed(
        tmp_path,
        interrupt_epoch=4,
        epochs=6,
        resumed_callbacks=lambda model: [Sabotage(model.base_model, epoch=4)],
        stop_on_collapse=0.3,
    )
    assert before[3].robust_accuracy >= 0.4, "too little to collapse from: retune the data"
    # The restart measured the backup (epoch 3) as the best so far; the collapse of epoch
    # 4 is measured from it (a fresh best would be the collapsed value: no stop) ...
    assert callback.reports[3].robust_accuracy == before[3].robust_accuracy
    assert (callback.best_epoch, callback.best_robust_accuracy) == (3, before[3].robust_accuracy)
    assert callback.collapsed_epoch == 4 and history.epoch == [4]
    assert callback.reports[4].robust_accuracy <= before[3].robust_accuracy - 0.3
    # ... and the weights put back are the backup's.
    for got, want in zip(model.get_weights(), at_backup):
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- tuning
def trial_files(project: Path) -> dict:
    return {
        p.parent.name: json.loads(p.read_text()) for p in sorted(project.glob("trial_*/trial.json"))
    }


@pytest.mark.slow
def test_sigkilled_search_resumes_without_losing_or_repeating_trials(tmp_path):
    from resume_tune import PROJECT, make_tuner

    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    project = run_dir / PROJECT
    command = [sys.executable, TUNE_SCRIPT, run_dir, "--pause-trial", "1"]
    with processes() as start:
        reference = start([sys.executable, TUNE_SCRIPT, reference_dir], tmp_path / "ref.log")
        first = start(command, tmp_path / "first.log")
        assert wait_for_file(run_dir / "paused", first) == {"trial_id": "1", "pid": first.pid}
        # Killed in the second trial: the first is completed and scored on disk.
        before = trial_files(project)
        assert sorted(before) == ["trial_0", "trial_1"]
        assert before["trial_0"]["status"] == "COMPLETED"
        assert math.isfinite(before["trial_0"]["score"])
        assert before["trial_1"]["status"] == "RUNNING" and before["trial_1"]["score"] is None
        oracle = json.loads((project / "oracle.json").read_text())
        assert list(oracle["ongoing_trials"].values()) == ["1"]
        sigkill(first)

        second = start(command, tmp_path / "second.log")  # the same command again
        finish(second)
        finish(reference)

    result = json.loads((run_dir / "result.json").read_text())
    expected = json.loads((reference_dir / "result.json").read_text())
    # The restart retried the interrupted trial under its id, then ran the last one;
    # the first trial was not run again.
    assert result["ran"] == ["1", "2"]
    assert result["completed"] == ["0", "1", "2"]
    # What the project holds, read back by keras-tuner itself.
    keras.utils.set_random_seed(0)
    oracle = make_tuner(run_dir).oracle
    trials = oracle.trials
    assert sorted(trials) == ["0", "1", "2"]
    assert oracle.start_order == ["0", "1", "2"] and oracle.end_order == ["0", "1", "2"]
    assert oracle.ongoing_trials == {} and oracle.remaining_trials() == 0
    assert all(t.status == "COMPLETED" and math.isfinite(t.score) for t in trials.values())
    assert trials["0"].score == before["trial_0"]["score"]  # unchanged by the restart
    assert trials["0"].hyperparameters.values == before["trial_0"]["hyperparameters"]["values"]
    assert trials["1"].hyperparameters.values == before["trial_1"]["hyperparameters"]["values"]
    assert sorted(trial_files(project)) == ["trial_0", "trial_1", "trial_2"]
    # The same trials, values and scores as the uninterrupted search.
    assert expected["ran"] == expected["completed"] == ["0", "1", "2"]
    assert set(result["trials"]) == set(expected["trials"])
    for trial_id, trial in expected["trials"].items():
        got = result["trials"][trial_id]
        assert got["status"] == trial["status"] == "COMPLETED"
        assert got["values"] == trial["values"], trial_id
        assert got["score"] == pytest.approx(trial["score"], abs=1e-6), trial_id
        assert trials[trial_id].score == got["score"]


# --------------------------------------------------------------------------- evaluation
EVALUATE_SCRIPT = TESTS / "resume_evaluate.py"


@pytest.mark.slow
def test_sigkilled_evaluation_resumes_as_if_uninterrupted(tmp_path):
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    command = [sys.executable, EVALUATE_SCRIPT, run_dir, "--state", "--pause-batch", 3]
    with processes() as start:
        reference = start([sys.executable, EVALUATE_SCRIPT, reference_dir], tmp_path / "ref.log")
        first = start(command, tmp_path / "first.log")
        paused = wait_for_file(run_dir / "paused", first)
        assert paused == {"batch": 3, "pid": first.pid}
        stored = json.loads((run_dir / "state.json").read_text())
        assert len(stored["batches"]) == 3 and not stored["complete"]
        sigkill(first)
        assert not (run_dir / "result.json").exists()
        # The killed run left a complete state file (written atomically), and no temporary.
        assert json.loads((run_dir / "state.json").read_text()) == stored
        assert sorted(p.name for p in run_dir.iterdir()) == ["paused", "state.json"]
        second = start(command, tmp_path / "second.log")
        finish(second)
        finish(reference)
    expected = json.loads((reference_dir / "result.json").read_text())
    resumed = json.loads((run_dir / "result.json").read_text())
    assert expected["attacked"] == [0, 1, 2, 3, 4, 5]
    assert resumed["attacked"] == [3, 4, 5]  # the finished batches were not redone
    for key in (
        "clean_accuracy", "accuracy", "attack_success_rate", "per_class_accuracy",
        "clean_per_class_accuracy", "broken_by", "num_examples", "zero_gradient_fraction",
    ):  # fmt: skip
        assert resumed[key] == expected[key], key
    assert json.loads((run_dir / "state.json").read_text())["complete"]
