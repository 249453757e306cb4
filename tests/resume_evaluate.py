"""An evaluation that tests/test_resume.py kills with SIGKILL and starts again.

    python tests/resume_evaluate.py WORKDIR [--state] [--pause-batch B]

`evaluate_robustness` (AutoAttack-fast, few steps, seed 0) of a fixed linear classifier on
fixed data, 6 batches of 8, from a dataset read batch by batch. With `--state` it keeps
WORKDIR/state.json. When it is about to read batch `--pause-batch` (the batches before it
finished and recorded) it writes WORKDIR/paused and sleeps there until it is killed; a
restart of the same command finds the marker and does not pause again. At the end it
writes WORKDIR/result.json: the report, and the batches this process attacked.
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

from keras_advreg.attacks import AutoAttack  # noqa: E402
from keras_advreg.evaluation import evaluate, evaluate_robustness  # noqa: E402

N, FEATURES, CLASSES, BATCH = 48, 6, 5, 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--state", action="store_true")
    parser.add_argument("--pause-batch", type=int)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    marker = args.workdir / "paused"
    pause = args.pause_batch is not None and not marker.exists()

    rng = np.random.default_rng(0)
    x = rng.random((N, FEATURES), dtype=np.float32)
    y = (np.arange(N) % CLASSES).astype("int64")
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(CLASSES)])
    model.set_weights(
        [rng.normal(size=(FEATURES, CLASSES)).astype("float32"), np.zeros(CLASSES, "float32")]
    )

    def generate():
        for i, start in enumerate(range(0, N, BATCH)):
            if pause and i == args.pause_batch:
                marker.write_text(json.dumps({"batch": i, "pid": os.getpid()}))
                while True:  # until SIGKILL
                    time.sleep(1)
            yield x[start : start + BATCH], y[start : start + BATCH]

    signature = (
        tf.TensorSpec((None, FEATURES), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False  # read only when asked
    data = tf.data.Dataset.from_generator(generate, output_signature=signature)
    data = data.with_options(options)

    attacked = []
    real = evaluate.attack_batch

    def counting(*a, **kw):
        attacked.append(int(a[7]))  # the batch index
        return real(*a, **kw)

    evaluate.attack_batch = counting
    attack = AutoAttack((0.05, 0.2), version="fast", steps=5, seed=0)
    report = evaluate_robustness(
        model,
        data,
        attack=attack,
        batch_size=BATCH,
        warn=False,
        state_path=args.workdir / "state.json" if args.state else None,
    )
    result = report.to_dict()
    result["attacked"] = attacked
    (args.workdir / "result.json").write_text(json.dumps(result))
    sys.exit(0)


if __name__ == "__main__":
    main()
