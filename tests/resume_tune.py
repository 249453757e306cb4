"""A keras-tuner search that tests/test_resume.py kills with SIGKILL and starts again.

    python tests/resume_tune.py DIRECTORY [--pause-trial ID]

`kt.RandomSearch` (3 trials, `overwrite=False`) over an `AdversarialHyperModel`, run by
`keras_advreg.tuning.search` on tiny fixed data. In trial `--pause-trial` (at batch 4
of its one epoch) it writes DIRECTORY/paused and sleeps there until it is killed; a restart of
the same command finds the marker, reloads the project and does not pause again. At the
end it writes DIRECTORY/result.json: the trials this process ran, and every trial's
status, hyperparameters and score.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402
import tensorflow as tf  # noqa: E402
from resume_train import data  # noqa: E402  (tests/ is this script's sys.path[0])

from keras_advreg import AdvConfig, attacks  # noqa: E402
from keras_advreg.tuning import AdversarialHyperModel, search  # noqa: E402

SEED = 0
PROJECT = "resume"
# The trial running now; module-level because keras-tuner deep-copies the callbacks.
CURRENT_TRIAL: dict = {}


def build_base_model(hp):
    units = hp.Int("units", 4, 32, step=4)
    # The same initial weights for a trial whichever process (or retry) builds it.
    keras.utils.set_random_seed(SEED)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def make_tuner(directory) -> kt.RandomSearch:
    hypermodel = AdversarialHyperModel(
        build_base_model,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=lambda hp: keras.optimizers.Adam(hp.Choice("learning_rate", [0.01, 0.1])),
        metrics=["accuracy"],
        adv_config=AdvConfig(clip_value_min=0.0, clip_value_max=1.0),
        attack=attacks.PGD(steps=3, random_start=False),
        epsilons=0.05,
    )
    return kt.RandomSearch(
        hypermodel,
        objective=hypermodel.objective(),
        max_trials=3,
        seed=1,
        directory=str(directory),
        project_name=PROJECT,
        overwrite=False,  # a restart resumes the project
    )


class Pause(keras.callbacks.Callback):
    """In one trial, writes the marker at batch 4, then sleeps until killed."""

    def __init__(self, marker: Path, trial_id: str | None):
        super().__init__()
        self.marker, self.trial_id = marker, trial_id
        self.active = trial_id is not None and not marker.exists()

    def on_train_batch_begin(self, batch, logs=None):
        if self.active and (CURRENT_TRIAL.get("id"), batch) == (self.trial_id, 4):
            tmp = self.marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"trial_id": self.trial_id, "pid": os.getpid()}))
            tmp.replace(self.marker)
            time.sleep(600)  # killed here; the test's timeout ends it otherwise
            sys.exit("not killed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--pause-trial", default=None)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    x, y = data(64, seed=1)
    x_val, y_val = data(48, seed=2)
    tuner = make_tuner(args.directory)
    ran = []
    begin_trial = tuner.on_trial_begin

    def on_trial_begin(trial):
        CURRENT_TRIAL["id"] = trial.trial_id
        ran.append(trial.trial_id)
        begin_trial(trial)

    tuner.on_trial_begin = on_trial_begin
    completed = search(
        tuner,
        x,
        y,
        epochs=1,
        batch_size=8,
        shuffle=False,
        validation_data=(x_val, y_val),
        callbacks=[Pause(args.directory / "paused", args.pause_trial)],
        verbose=0,
    )
    trials = {
        t.trial_id: {"status": t.status, "score": t.score, "values": t.hyperparameters.values}
        for t in tuner.oracle.trials.values()
    }
    result = {"ran": ran, "completed": [t.trial_id for t in completed], "trials": trials}
    (args.directory / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
