"""A training run that tests/test_resume.py kills with SIGKILL and starts again.

    python tests/resume_train.py WORKDIR [--epochs N] [--every-n-epochs N]
        [--stop-on-collapse DROP] [--sabotage-epoch E] [--pause-epoch E] [--pause-batch B]

`AdversarialRegularization` on tiny fixed data, with `AdversarialRobustnessCallback`
(PGD, first in `callbacks`) and `keras.callbacks.BackupAndRestore(WORKDIR/backup)`.
Seeds are fixed and ops deterministic, so two runs of the same command train alike.

When it reaches batch `--pause-batch` of epoch `--pause-epoch` (0-based) it writes
WORKDIR/paused and sleeps there until it is killed; a restart of the same command finds
the marker and does not pause again. `--sabotage-epoch` negates the last layer (a
collapse of robust accuracy) at the end of that epoch's last batch. At the end it writes
WORKDIR/result.json (history, the callback's state) and WORKDIR/weights.npz.
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
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_advreg  # noqa: E402

SEED = 0
BATCH_SIZE = 16
STEPS_PER_EPOCH = 4  # 64 training examples


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points of [0, 1]^4 labelled by the nearest of three centres (a learnable task)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4), dtype=np.float32)
    centres = np.array([[0.2, 0.2, 0.5, 0.5], [0.8, 0.3, 0.5, 0.5], [0.5, 0.8, 0.5, 0.5]])
    y = np.argmin(((x[:, None, :] - centres) ** 2).sum(-1), axis=1).astype("int64")
    return x, y


class Pause(keras.callbacks.Callback):
    """Writes the marker at one batch, then sleeps until killed (unless it existed)."""

    def __init__(self, marker: Path, epoch: int | None, batch: int):
        super().__init__()
        self.marker, self.pause_epoch, self.pause_batch = marker, epoch, batch
        self.active = epoch is not None and not marker.exists()
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.active and (self.epoch, batch) == (self.pause_epoch, self.pause_batch):
            tmp = self.marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"epoch": self.epoch, "batch": batch, "pid": os.getpid()}))
            tmp.replace(self.marker)  # atomic: the test never reads half a file
            time.sleep(600)  # killed here; the test's timeout ends it otherwise
            sys.exit("not killed")


class Sabotage(keras.callbacks.Callback):
    """Negates the last layer at the end of one epoch: robust accuracy collapses."""

    def __init__(self, base_model: keras.Model, epoch: int | None):
        super().__init__()
        self.base_model, self.sabotage_epoch, self.epoch = base_model, epoch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.sabotage_epoch and batch == STEPS_PER_EPOCH - 1:
            layer = self.base_model.layers[-1]
            layer.set_weights([-w for w in layer.get_weights()])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--every-n-epochs", type=int, default=1)
    parser.add_argument("--stop-on-collapse", type=float, default=None)
    parser.add_argument("--sabotage-epoch", type=int, default=None)
    parser.add_argument("--pause-epoch", type=int, default=None)
    parser.add_argument("--pause-batch", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    x, y = data(64, seed=1)
    x_val, y_val = data(48, seed=2)
    base = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    model = keras_advreg.AdversarialRegularization(
        base,
        adv_config=keras_advreg.AdvConfig(
            multiplier=0.2, adv_step_size=0.05, clip_value_min=0.0, clip_value_max=1.0
        ),
    )
    model.compile(
        keras.optimizers.Adam(0.03),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    robustness = keras_advreg.AdversarialRobustnessCallback(
        (x_val, y_val),
        # No random start: no draws from the global RNG, whose state a restart resets.
        attack=keras_advreg.attacks.PGD(
            steps=5, random_start=False, clip_value_min=0.0, clip_value_max=1.0
        ),
        epsilons=0.05,
        every_n_epochs=args.every_n_epochs,
        stop_on_collapse=args.stop_on_collapse,
    )
    callbacks = [
        robustness,  # first: the callbacks after it see its keys
        keras.callbacks.BackupAndRestore(args.workdir / "backup", save_freq="epoch"),
        Sabotage(base, args.sabotage_epoch),
        Pause(args.workdir / "paused", args.pause_epoch, args.pause_batch),
    ]
    history = model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=args.epochs,
        shuffle=False,  # a restart cannot replay the shuffles of the epochs before it
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        verbose=0,
    )
    result = {
        "epochs": history.epoch,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "evaluated_epochs": sorted(robustness.reports),
        "best_robust_accuracy": robustness.best_robust_accuracy,
        "best_epoch": robustness.best_epoch,
        "collapsed_epoch": robustness.collapsed_epoch,
        "iterations": int(model.optimizer.iterations),
    }
    np.savez(args.workdir / "weights.npz", *model.get_weights())
    (args.workdir / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
