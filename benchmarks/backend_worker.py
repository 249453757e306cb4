"""One Keras backend's timing of an attack (a subprocess of `benchmarks/backends.py`).

Usage: KERAS_BACKEND=<backend> python benchmarks/backend_worker.py MODEL MNIST_DIR ATTACK N
       EPS BATCH REPEATS

Loads the model, attacks the first N MNIST test images with `evaluate_robustness` (seed 0),
and prints one JSON line: the robust accuracy, the first call's wall and CPU seconds
(compilation included) and the median of the next REPEATS calls.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_advreg  # noqa: E402
from keras_advreg import attacks  # noqa: E402


def mnist_test(directory: pathlib.Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(directory / "t10k-images-idx3-ubyte.gz", "rb") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(directory / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = images.reshape(-1, 28, 28, 1)[:n].astype("float32") / 255.0
    return x, labels[:n].astype("int32")


def main() -> None:
    model_path, mnist_dir, name, n, eps, batch, repeats = sys.argv[1:8]
    model = keras.models.load_model(model_path, compile=False)
    x, y = mnist_test(pathlib.Path(mnist_dir), int(n))
    attack = attacks.get(name, epsilon=float(eps), clip_value_min=0.0, clip_value_max=1.0, seed=0)

    def once() -> tuple[float, float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        report = keras_advreg.evaluate_robustness(
            model, (x, y), attack=attack, batch_size=int(batch), warn=False
        )
        return report.accuracy[float(eps)], time.perf_counter() - wall, time.process_time() - cpu

    accuracy, first_wall, first_cpu = once()
    runs = [once() for _ in range(int(repeats))]
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "accuracy": accuracy,
                "same_accuracy_every_run": all(r[0] == accuracy for r in runs),
                "first_wall": first_wall,
                "first_cpu": first_cpu,
                "wall": statistics.median(r[1] for r in runs) if runs else None,
                "cpu": statistics.median(r[2] for r in runs) if runs else None,
            }
        )
    )


if __name__ == "__main__":
    main()
